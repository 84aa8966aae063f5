# scJEPA benchmark workflow. Entry point: `snakemake --cores N` (default config) or
# `snakemake --cores N --profile slurm --configfile config/paper.yaml` on a cluster.
from snakemake.utils import min_version

min_version("9.0")


# The demo config is the run only when no --configfile is given: a config named on the command line is
# the whole run (its datasets and methods are exactly what runs; keys it leaves out take the schema's
# defaults), never merged into the demo's. `--config key=value` alone still edits the demo run.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


# The HTML report (`snakemake --report`) opens on this page: what the run is and how to read it.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# One rule file per task: its scoring rule (and, for a task the library does not declare, its
# declaration). Read before `rule all`, whose targets are every registered task's tables and figures.
for _task_file in TASK_FILES:

    include: _task_file


check_tasks_registered()


wildcard_constraints:
    dataset=r"[^/]+",
    method=r"[^/]+",
    seed=r"\d+",


rule all:
    """Every table and figure of the benchmark, and the inputs of the HTML report."""
    input:
        all_targets(),
    default_target: True


include: "workflow/rules/data.smk"
include: "workflow/rules/pretrained_method.smk"


for _method_file in method_rule_files():

    include: _method_file


include: "workflow/rules/report.smk"
include: "workflow/rules/sweeps.smk"


check_methods_have_rules()
check_method_hparams()


onerror:
    write_tables_after_failure()
