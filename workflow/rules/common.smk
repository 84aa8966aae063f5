# Config access, target builders and input functions. No rules here.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

WORKFLOW_DIR = Path(workflow.basedir)
sys.path.insert(0, str(WORKFLOW_DIR / "src"))  # the library, also when not pip-installed

import scjepa.config as scjepa_config
from scjepa.errors import InputError
from scjepa import task_registry as tasks_registry
from scjepa.task_registry import Figure, Table, Task  # for task files: register_task(Task(...))

#: one rule file per task (workflow/rules/tasks/<task>.smk): the task's scoring rule and, for a task
#: the library does not declare, its declaration (register_task)
TASK_FILES = sorted(str(p.relative_to(WORKFLOW_DIR)) for p in (WORKFLOW_DIR / "workflow/rules/tasks").glob("*.smk"))

try:
    _checked = scjepa_config.validate(config, extra_tasks=[Path(f).stem for f in TASK_FILES])
except InputError as _exc:
    raise WorkflowError(f"Configuration error: {_exc}") from None
config.clear()
config.update(_checked)

DATASETS = config["datasets"]
CORPUS = config["corpus"]
METHODS = list(config["methods"])
FINETUNE_SEEDS = tasks_registry.get("finetune").replicate_ids(config)  # one job fine-tunes them all
NEVER = "(?!x)x"  # a regex that matches nothing: a wildcard constraint for an empty set


def names_regex(names):
    """Wildcard constraint matching exactly the given names."""
    names = list(names)
    return "|".join(re.escape(n) for n in names) if names else NEVER


def datasets_with_role(role):
    return [d for d, e in DATASETS.items() if role in e["roles"]]


def datasets_with_source(source):
    return [d for d, e in DATASETS.items() if e["source"] == source]


def method_entry(method):
    return scjepa_config.method_entry(config, method)


#: method variants of the sweeps section (scjepa.config.sweep_variants): trained and embedded by their
#: family's rules, scored by workflow/rules/sweeps.smk on validation cells only, never in an evaluation table
SWEEP_VARIANTS = scjepa_config.sweep_variants(config)


def methods_of_family(family):
    """The run's methods of ``family`` and the sweep variants of it (their family's rules train them)."""
    return [m for m in [*METHODS, *SWEEP_VARIANTS] if method_entry(m)["family"] == family]


def method_seed(wildcards):
    """A method's pretraining seed: the run's ``seed``, or a sweep variant's own."""
    return int(method_entry(wildcards.method).get("seed", config["seed"]))


def methods_serving(task):
    return [m for m in METHODS if task in method_entry(m)["serves"]]


def method_rule_files():
    """Every rule file in workflow/rules/methods/: one file per method (family)."""
    files = (WORKFLOW_DIR / "workflow/rules/methods").glob("*.smk")
    return sorted(str(p.relative_to(WORKFLOW_DIR)) for p in files if not p.name.startswith("_"))


def check_methods_have_rules():
    """An unknown method name fails before any job runs (called after the method files are included)."""
    defined = {r.name for r in workflow.rules}
    for m in METHODS:
        fam = method_entry(m)["family"]
        if not ({f"embed_{fam}", f"embed_{m}"} & defined):
            raise WorkflowError(
                f"Configuration error: key 'methods': method '{m}' (family '{fam}') has no rule "
                f"'embed_{fam}' or 'embed_{m}'. Add workflow/rules/methods/{m}.smk or fix the name "
                f"(known families: {', '.join(sorted(r.name[6:] for r in workflow.rules if r.name.startswith('embed_')))})."
            )


def check_method_hparams():
    """Unknown or mistyped hyper-parameters fail before any job runs, naming the key."""
    from scjepa.methods import FAMILIES, get_family

    for m in METHODS:
        entry = method_entry(m)
        if entry["family"] not in FAMILIES:
            continue  # a user family with its own rule file validates its own parameters
        try:
            get_family(entry["family"])(**{k: v for k, v in training_hparams(m).items() if k != "family"})
        except InputError as exc:
            raise WorkflowError(f"Configuration error in method_params.{m}.hparams: {exc}") from None


# ---- parameters passed to scripts ---------------------------------------------------------------


def _local_fingerprints():
    """Content fingerprints (size + sha256) of every local source, checked at parse time.

    They enter the data rules' params (``dataset_spec``), so a user's file edited in place reruns its
    dataset's jobs and a file merely touched does not; a missing file fails here, before any job runs
    (a dry run reports it), naming ``datasets.<name>.path``.
    """
    from scjepa.data.sources import file_fingerprint

    out = {}
    for d in datasets_with_source("local"):
        try:
            out[d] = file_fingerprint(DATASETS[d]["path"], cache=".snakemake/scjepa/source_fingerprints.json")
        except InputError as exc:
            raise WorkflowError(f"Configuration error: {exc.for_dataset(d)}") from None
    return out


SOURCE_FINGERPRINTS = _local_fingerprints()


def dataset_spec(wildcards):
    """A dataset's config entry as its jobs see it: ``dataset`` is its name (``name`` belongs to the
    bundled source), ``fingerprint`` the content of a local source."""
    spec = {"dataset": wildcards.dataset, **DATASETS[wildcards.dataset]}
    if wildcards.dataset in SOURCE_FINGERPRINTS:
        spec["fingerprint"] = SOURCE_FINGERPRINTS[wildcards.dataset]
    return spec


def training_hparams(method):
    """Training-engine defaults overlaid with the method's own hyper-parameters (+ family, name)."""
    entry = method_entry(method)
    hp = {k: v for k, v in config["training"].items() if k != "threads"} if entry["family"] in scjepa_config.TORCH_FAMILIES else {}
    hp.update(entry["hparams"])
    hp["family"] = entry["family"]
    return hp


def method_gpu(method):
    return int(method_entry(method)["gpu"])


# ---- resources (grow with attempt: an out-of-memory job is retried bigger) ------------------------


def mem(base_mb):
    def _mem(wildcards, attempt):
        return int(base_mb * (1.5 ** (attempt - 1)))

    return _mem


def runtime(base_min):
    def _runtime(wildcards, attempt):
        return int(base_min * attempt)

    return _runtime


def gpu_of_method(wildcards):
    return method_gpu(wildcards.method)


# ---- paths ----------------------------------------------------------------------------------------


def raw_path(dataset):
    return f"resources/datasets/{dataset}/raw.h5ad"


def processed_path(dataset):
    return f"results/data/{dataset}/processed.h5ad"


def embedding_path(method, dataset):
    return f"results/embeddings/{method}/{dataset}.h5ad"


def model_dir(method):
    return f"results/models/{method}"


def gene_space_input(wildcards):
    gs = config["gene_space"]
    if gs.get("file"):
        return gs["file"]
    return raw_path(gs.get("from_dataset") or CORPUS)


def processed_input(wildcards):
    return processed_path(wildcards.dataset)


def embedding_input(wildcards):
    return embedding_path(wildcards.method, wildcards.dataset)


def model_input(wildcards):
    return model_dir(wildcards.method)


def curve_inputs(wildcards=None):
    return [model_dir(m) for m in torch_methods()]


# ---- score targets --------------------------------------------------------------------------------


def register_task(task):
    """Declare a task from its rule file (``workflow/rules/tasks/<name>.smk``); checks and defaults its
    ``tasks.<name>`` settings against the declaration's schema."""
    tasks_registry.register(task)
    try:
        scjepa_config.register_task_settings(config, task)
    except InputError as exc:
        raise WorkflowError(f"Configuration error: {exc}") from None
    return task


def check_tasks_registered():
    """After every task file is read: each ``tasks.<name>`` and ``serves`` entry names a registered task."""
    for f in TASK_FILES:
        if Path(f).stem not in tasks_registry.REGISTRY:
            raise WorkflowError(f"{f} declares no task '{Path(f).stem}': call register_task(Task('{Path(f).stem}', ...))")
    try:
        scjepa_config.check_tasks_registered(config)
    except InputError as exc:
        raise WorkflowError(f"Configuration error: {exc}") from None


def datasets_with_roles(roles):
    return [d for d, e in DATASETS.items() if any(r in e["roles"] for r in roles)]


def eval_datasets(task):
    return sorted(datasets_with_roles(tasks_registry.get(task).roles))


def score_paths(task, methods=None, datasets=None):
    """The score records of ``task``: one per (method, dataset), or one per replicate (seed, run)."""
    methods = methods_serving(task) if methods is None else methods
    datasets = eval_datasets(task) if datasets is None else datasets
    replicates = tasks_registry.get(task).replicate_ids(config)
    out = []
    for m in methods:
        for d in datasets:
            if replicates is None:
                out.append(f"results/scores/{task}/{m}/{d}.json")
            else:
                out += [f"results/scores/{task}/{m}/{d}/{r}.json" for r in replicates]
    return out


def method_hparams(wildcards):
    return training_hparams(wildcards.method)


def finetune_streams(dataset):
    """Whether score_finetune reads ``dataset`` through the store (tasks.finetune.stream; docs/PROTOCOL.md 3.2)."""
    from scjepa.tasks.finetune_store import streams

    return streams(dataset, CORPUS, config["tasks"]["finetune"]["stream"])


def finetune_inputs(wildcards):
    """score_finetune's inputs: the processed dataset and the model; the corpus' store only on the store path."""
    out = {"processed": processed_path(wildcards.dataset), "model": model_dir(wildcards.method)}
    if finetune_streams(wildcards.dataset):
        out["store"] = f"results/store/{CORPUS}"
    return out


def finetune_params(wildcards):
    """tasks.finetune (every key but the seeds, one job runs them all, and the path switch) and the training
    device; on the store path also the loader's settings (``store``)."""
    ft = {k: v for k, v in config["tasks"]["finetune"].items() if k not in ("seeds", "stream")}
    if finetune_streams(wildcards.dataset):
        ft["store"] = {"buffer_shards": config["store"]["buffer_shards"]}
    return {**ft, "device": config["training"]["device"]}


def integration_params(wildcards):
    return {k: v for k, v in config["tasks"]["integration"].items() if k != "runs"}


def spatial_reference(wildcards):
    return DATASETS[wildcards.dataset].get("reference") or ""


def spatial_inputs(wildcards):
    inputs = {"emb": embedding_path(wildcards.method, wildcards.dataset),
              "processed": processed_path(wildcards.dataset)}
    ref = DATASETS[wildcards.dataset].get("reference")
    if ref:
        inputs["ref_emb"] = embedding_path(wildcards.method, ref)
        inputs["ref_processed"] = processed_path(ref)
    return inputs


# ---- hierarchy-corrected F1 and the leakage check (both off unless the config switches them on) -----

HIERARCHY = config["tasks"]["zero_shot"]["hierarchy"]
LEAKAGE = config["leakage"]
LEAKAGE_REPORT = "results/data/leakage_check.json"


def ontology_path():
    """The OBO file of tasks.zero_shot.hierarchy.ontology: the pinned Cell Ontology (rule
    fetch_cell_ontology), the embedded world's lineage (rule write_synthetic_ontology), or a user's file."""
    which = HIERARCHY["ontology"]
    if which == "cell_ontology":
        return f"resources/ontology/cl_{HIERARCHY['cell_ontology_version']}.obo"
    if which == "synthetic":
        return "resources/ontology/synthetic.obo"
    return which


def evaluation_guards(wildcards):
    """Extra inputs of the annotation score rules: the ontology (hierarchy on) and the passed leakage
    check (leakage.check on), so a leak fails the run before any score is written. Empty by default."""
    out = {}
    if HIERARCHY["enabled"]:
        out["ontology"] = ontology_path()
    if LEAKAGE["check"]:
        out["leakage"] = LEAKAGE_REPORT
    return out


def hierarchy_params(wildcards):
    return dict(HIERARCHY) if HIERARCHY["enabled"] else None


def leakage_datasets():
    """Datasets the leakage check covers: every one whose test split is scored by an annotation task."""
    return sorted(d for d in datasets_with_roles(("in_distribution", "out_of_distribution", "spatial")) if d != CORPUS)


def census_query_inputs(wildcards):
    """query_census_corpus: the pinned Cell Ontology its type filters read (census_query.ontology_filters)."""
    q = DATASETS[wildcards.dataset].get("census_query") or {}
    if not q.get("ontology_filters", True):
        return {}
    return {"ontology": f"resources/ontology/cl_{HIERARCHY['cell_ontology_version']}.obo"}


def split_from_inputs(wildcards):
    """preprocess: the processed dataset whose split this one takes (datasets.<name>.split_from)."""
    src = (DATASETS[wildcards.dataset].get("split_from") or {}).get("dataset")
    return {"split_source": processed_path(src)} if src else {}


def bridge_kind(wildcards):
    roles = DATASETS[wildcards.dataset]["roles"]
    return "timecourse" if "timecourse" in roles else "perturbation"


# ---- report layout --------------------------------------------------------------------------------

TORCH_FAMILIES = scjepa_config.TORCH_FAMILIES


def method_labels():
    return {m: method_entry(m)["label"] for m in METHODS}


def main_methods():
    """Rows of Tables 1-3: every method that is not an ablation variant."""
    return [m for m in METHODS if not method_entry(m)["ablation_of"]]


def ablation_methods():
    """Rows of Table 4: each ablated method followed by its variants."""
    bases = [m for m in METHODS if any(method_entry(v)["ablation_of"] == m for v in METHODS)]
    rows = []
    for b in bases:
        rows += [b] + [v for v in METHODS if method_entry(v)["ablation_of"] == b]
    return rows


def task_methods(task):
    """Methods (not ablation variants) that take part in ``task``."""
    return [m for m in main_methods() if task in method_entry(m)["serves"]]


def torch_methods():
    return [m for m in METHODS if method_entry(m)["family"] in TORCH_FAMILIES]


def na_cells():
    """Every (task, method) pair a method does not serve renders n/a."""
    return [{"task": t, "method": m, "dataset": "*"} for m in METHODS for t in tasks_registry.names()
            if t not in method_entry(m)["serves"]]


def table_spec(name):
    return next(t for t in tasks_registry.tables() if t.name == name)


def table_rows(tab):
    """Rows of a table: the main methods, or (Table 4) each ablated method followed by its variants."""
    return ablation_methods() if tab.rows == "ablation" else main_methods()


def table_datasets(tab):
    return datasets_with_roles(tab.roles)


def table_scores(tab):
    """Score files a table reads (only those the DAG produces: n/a cells have none)."""
    rows, datasets = table_rows(tab), table_datasets(tab)
    out = []
    for task in tab.reads:
        out += score_paths(task, [m for m in rows if task in method_entry(m)["serves"]], datasets)
    return out


def table_has_control_pair(tab):
    """A negative and a positive control are rows of the table and take part in one of the tasks it reads (the
    bridge tables have baseline rows of their own instead)."""
    if tab.renderer.startswith("table_bridge_"):
        return False
    kinds = {method_entry(m)["control"] for m in table_rows(tab)
             if method_entry(m)["control"] and set(tab.reads) & set(method_entry(m)["serves"])}
    return {"negative", "positive"} <= kinds


def scaled_table_outputs(tab):
    """The table's scores scaled between its controls (scjepa.report.tables.scale_to_controls), where it has both."""
    if not table_has_control_pair(tab):
        return {}
    return {"scaled_md": f"results/tables/{tab.name}_scaled.md", "scaled_csv": f"results/tables/{tab.name}_scaled.csv"}


def table_params(tab):
    """The table rule's params (the keys ``scjepa.report.render.render_rule`` reads)."""
    params = {"table": tab.renderer, "methods": table_rows(tab), "datasets": table_datasets(tab), "na": na_cells(),
              "row_labels": method_labels()}
    controls = {m: method_entry(m)["control"] for m in params["methods"] if method_entry(m)["control"]}
    if controls:  # only with controls in the run: a table without them keeps the params it always had
        params["controls"] = controls
    if tab.replicates_of:
        params["seeds"] = tasks_registry.get(tab.replicates_of).replicate_ids(config)
    if tab.probe:
        params["probe"] = config["tasks"]["zero_shot"]["linear_probe"]
        params["k"] = config["tasks"]["zero_shot"]["k"]  # the caption says which k the kNN used
    if tab.hierarchy and HIERARCHY["enabled"]:  # only when switched on: the default run's params stay as they were
        params["hierarchy"] = True
    if tab.renderer == "generic":
        params.update(task=tab.reads[0], metric=tab.metric, higher_is_better=tab.higher_is_better,
                      metric_label=tab.label, name=tab.name, caption=tab.label)
    return params


def spatial_figure_scores(wildcards):
    ms = task_methods("spatial")
    return score_paths("spatial", ms, [wildcards.dataset]) + score_paths(
        "finetune", [m for m in ms if "finetune" in method_entry(m)["serves"]], [wildcards.dataset])


def spatial_figure_predictions(wildcards):
    return [f"results/scores/spatial/{m}/{wildcards.dataset}.predictions.csv" for m in task_methods("spatial")]


def bridge_figure_samples(wildcards):
    return [f"results/scores/bridge/{m}/{wildcards.dataset}.samples.npz" for m in task_methods("bridge")]


def library_file(module):
    """Absolute path of a library module, declared as an input of the rules it draws or renders, so
    that editing e.g. the figure style in ``scjepa/report/figures.py`` redraws the figures (and nothing
    upstream)."""
    import importlib

    return str(Path(importlib.import_module(module).__file__).resolve())


def table_files(name):
    return [f"results/tables/{name}.{ext}" for ext in ("md", "csv", "tex")]


def figure_files(name):
    return [f"results/figures/{name}.{ext}" for ext in config["report"]["formats"]]


def all_targets():
    """Every table and figure of the run: those of each registered task whose datasets are in the config."""
    out = []
    for tab in tasks_registry.tables():
        if table_datasets(tab) and table_rows(tab):
            out += table_files(tab.name) + list(scaled_table_outputs(tab).values())
    for task in tasks_registry.REGISTRY.values():
        for fig in task.figures:
            datasets = datasets_with_roles(fig.roles)
            if "{dataset}" in fig.name:
                out += [f for d in datasets for f in figure_files(fig.name.format(dataset=d))]
            elif datasets:
                out += figure_files(fig.name)
    if torch_methods():
        out += figure_files("fig4_training_dynamics")
    # the benchmark at a glance and what each method costs (rules report_summary, report_cost)
    out += table_files("table_summary") + figure_files("fig_summary")
    out += table_files("table_cost") + figure_files("fig_cost")
    # hyper-parameter sweeps (workflow/rules/sweeps.smk): validation scores only
    for name in config["sweeps"]:
        out += table_files(f"sweep_{name}") + figure_files(f"sweep_{name}")
    return out


def script_path(name):
    """Absolute path of a thin script (rules reused with `use rule` resolve paths from their new file)."""
    return str(WORKFLOW_DIR / "workflow" / "scripts" / name)


ENV = str(WORKFLOW_DIR / "envs" / "scjepa.yaml")
CENSUS_ENV = str(WORKFLOW_DIR / "envs" / "census.yaml")


def write_tables_after_failure():
    """Under --keep-going, write every table that could not run because an upstream job failed.

    Called from the Snakefile's ``onerror`` handler once all runnable jobs have finished. Each
    unfinished table job is rendered by the same library code as the ``table_*`` rules, with its
    missing score records as ``failed`` cells, so one failing method does not cost the others their
    tables. The files get an old modification time: Snakemake sees them as outdated and the next run
    rebuilds them from complete inputs. The run still exits non-zero.
    """
    import logging
    import os

    from scjepa.report.render import render_rule
    from scjepa.rule import as_dict

    if not workflow.execution_settings.keep_going or workflow.dag is None:
        return
    log = logging.getLogger("snakemake.logging")
    for job in list(workflow.dag.needrun_jobs()):
        if not job.rule.name.startswith("table_"):
            continue
        try:
            render_rule(as_dict(job.input), as_dict(job.params), as_dict(job.output), after_failure=True)
        except Exception as exc:  # the table job itself is what failed: nothing more to do here
            log.error(f"--keep-going: could not write {list(job.output)} after the failure: {exc}")
            continue
        for out in job.output:
            os.utime(out, (0, 0))  # outdated on purpose: rebuilt by the next run
        log.warning(f"--keep-going: wrote {job.output[0]} with 'failed' cells for the jobs that failed")
