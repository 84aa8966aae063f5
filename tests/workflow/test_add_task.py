"""Adding a task = one rule file (declaration + scoring rule) + its script + its caption; it reaches a table."""

import textwrap

import pytest

from wfhelpers import TINY, copy_workflow, snakemake

pytestmark = pytest.mark.slow

TASK_FILE = '''
register_task(
    Task(
        "silhouette",
        roles=("in_distribution",),
        serves=("encoder", "embedding"),
        tables=(
            Table("table_silhouette", "table_silhouette", "generic", ("in_distribution",), ("silhouette",),
                  "silhouette.rst", metric="silhouette", label="Cell-type silhouette of the test cells"),
        ),
        settings={"properties": {"distance": {"type": "string", "enum": ["euclidean", "cosine"],
                                              "default": "euclidean"}}},
    )
)


rule score_silhouette:
    input:
        emb=embedding_input,
    output:
        score="results/scores/silhouette/{method}/{dataset}.json",
    params:
        distance=config["tasks"]["silhouette"]["distance"],
    log:
        "logs/score_silhouette/{method}/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    script:
        "silhouette.py"
'''

SCRIPT = '''
from sklearn.metrics import silhouette_score

from scjepa.contracts import read_embedding, score_record, split_mask, write_score
from scjepa.rule import run


def score(rule):
    method, dataset = rule.method_dataset()
    adata = read_embedding(rule.input["emb"], required_obs=("cell_type", "split"))
    test = split_mask(adata.obs, "test")
    value = silhouette_score(adata.obsm["X_emb"][test], adata.obs["cell_type"][test], metric=rule.params["distance"])
    record = score_record("silhouette", method, dataset, {"silhouette": value}, config=dict(rule.params))
    write_score(record, rule.output["score"])


run(snakemake, score)
'''


def test_new_task_file_reaches_its_table(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    tasks = wf / "workflow" / "rules" / "tasks"
    (tasks / "silhouette.smk").write_text(textwrap.dedent(TASK_FILE))
    (tasks / "silhouette.py").write_text(textwrap.dedent(SCRIPT))
    (wf / "workflow" / "report" / "silhouette.rst").write_text("Cell-type silhouette of each embedding.\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(TINY.read_text() + "\n")
    added = {"workflow/rules/tasks/silhouette.smk", "workflow/rules/tasks/silhouette.py",
             "workflow/report/silhouette.rst"}
    assert len(added) == 3  # the files a new task touches: nothing else in the workflow or library

    # the registry makes it a final target: `rule all` plans its table
    plan = snakemake("--configfile", cfg, "--config", "methods=[pca,harmony]", "-n", cwd=wf,
                     snakefile=wf / "Snakefile").stdout
    assert "results/tables/table_silhouette.md" in plan and "score_silhouette" in plan

    snakemake("--configfile", cfg, "--config", "methods=[pca,harmony]", "--cores", "2",
              "results/tables/table_silhouette.md", cwd=wf, snakefile=wf / "Snakefile")
    md = (wf / "results" / "tables" / "table_silhouette.md").read_text()
    pca = next(line for line in md.splitlines() if line.startswith("| PCA |"))
    assert any(c.strip().replace("*", "").lstrip("-").replace(".", "").isdigit() for c in pca.split("|")[2:]), pca
    harmony = next(line for line in md.splitlines() if line.startswith("| Harmony |"))
    assert "n/a" in harmony  # a per-dataset method is not served by default
    assert "Cell-type silhouette of the test cells" in md


def test_a_task_settings_typo_and_an_unknown_task_fail_naming_the_key(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    (wf / "workflow" / "rules" / "tasks" / "silhouette.smk").write_text(textwrap.dedent(TASK_FILE))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(TINY.read_text() + "\n")
    proc = snakemake("--configfile", cfg, "--config", "tasks={'silhouette': {'distanse': 'cosine'}}", "-n",
                     cwd=wf, snakefile=wf / "Snakefile", check=False)
    assert proc.returncode != 0 and "tasks.silhouette" in proc.stdout and "distanse" in proc.stdout
    proc = snakemake("--configfile", cfg, "--config", "tasks={'zero_shoot': {}}", "-n", cwd=wf,
                     snakefile=wf / "Snakefile", check=False)
    assert proc.returncode != 0 and "zero_shoot" in proc.stdout
