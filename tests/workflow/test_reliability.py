"""Reliability of the workflow: kills at random points, --keep-going, determinism, rerun scope.

The fault-injection test kills the whole process tree (Snakemake and its jobs, SIGKILL: no clean-up
runs) at >= 20 points of a tiny run (four methods: PCA, scJEPA, its no-reconstruction ablation, Harmony),
each time shortly after a job of a chosen kind has started (data, pretraining, a pretraining job past
its first checkpoint, embedding, scoring, reporting), checks that every output left on disk is whole,
unlocks and reruns, and finally compares those methods' rows of every table, byte for byte, with the
uninterrupted ``tiny_run`` (all methods): the same seed gives the same bytes, interrupted or not.
"""

import json
import os
import random
import re
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import anndata as ad
import h5py
import pandas as pd
import psutil
import pytest
import yaml

from wfhelpers import ROOT, SNAKEMAKE, TINY, copy_workflow, snakemake

pytestmark = pytest.mark.slow

TABLE_GLOB = "results/tables/*.csv"
FAULT_METHODS = "methods=[pca,scjepa,scjepa_no_recon,harmony]"
FAULT_LABELS = ("PCA", "scJEPA", "w/o reconstruction", "Harmony")
JOB_LINE = re.compile(r"^(?:local)?rule (\w+):")

# Kill plan: the kind of job that must be running when the tree is killed, in pipeline order.
# "checkpoint" = a pretraining job that has written a checkpoint but not its model yet.
KILL_PLAN = (
    ["data"] * 3
    + ["pretrain", "checkpoint", "pretrain", "checkpoint", "pretrain"]
    + ["embed"] * 4
    + ["score"] * 6
    + ["report"] * 3
)
KINDS = {
    "data": ("generate_synthetic", "preprocess", "define_gene_space", "build_store"),
    "pretrain": ("pretrain_",),
    "checkpoint": ("pretrain_",),
    "embed": ("embed_",),
    "score": ("score_",),
    "report": ("table_", "figure_"),
}


#: not the registry's tables: the cost table holds wall times (never byte-identical) and the summary ranks the
#: run's methods (this test runs fewer than the tiny run)
NOT_COMPARED = ("table_cost.csv", "table_summary.csv")


TINY_LABELS = {e.get("label") or m for m, e in yaml.safe_load(TINY.read_text())["method_params"].items()}


def _label_of_row(line: str) -> str:
    """A table row's method label, without the mark tables add to a control's."""
    label = line.split(",")[0]
    for mark in (" (neg. control)", " (pos. control)"):
        label = label.removesuffix(mark)
    return label


def _tables(work: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(work.glob(TABLE_GLOB)) if p.name not in NOT_COMPARED}


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        parent = psutil.Process(proc.pid)
        victims = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for p in victims:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=30)
    proc.wait(timeout=30)


def _checkpoint_exists(work: Path) -> bool:
    return any(work.glob("results/models/.*.work/checkpoint.pt"))


def run_and_kill(work: Path, kind: str, rng: random.Random, log: list) -> bool:
    """Start the tiny run; SIGKILL its process tree while a job of ``kind`` runs.

    Returns False if the run finished before such a job was seen (nothing left of that kind).
    """
    cmd = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(work), "--configfile", str(TINY),
           "--config", FAULT_METHODS, "--cores", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    started: list[str] = []
    output: list[str] = []

    def reader():
        for line in proc.stdout:
            output.append(line)
            m = JOB_LINE.match(line)
            if m:
                started.append(m.group(1))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    prefixes = KINDS[kind]
    deadline = time.monotonic() + 900
    seen = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            t.join(timeout=10)
            assert proc.returncode == 0, "".join(output[-80:])
            return False
        new = started[seen:]
        seen += len(new)
        hit = next((r for r in new if r.startswith(prefixes)), None)
        if hit and kind == "checkpoint":
            end = time.monotonic() + 60
            while not _checkpoint_exists(work) and proc.poll() is None and time.monotonic() < end:
                time.sleep(0.05)
            if not _checkpoint_exists(work):
                continue  # this job finished (or ran) without leaving a checkpoint to kill after
        elif hit:
            time.sleep(rng.uniform(0.2, 4.0))  # somewhere in the job: imports, compute, or writing
        if hit:
            running = [r for r in started if r.startswith(prefixes)]
            _kill_tree(proc)
            t.join(timeout=10)
            log.append((kind, hit, len(running)))
            return True
        time.sleep(0.05)
    _kill_tree(proc)
    raise AssertionError(f"no {kind} job within 15 minutes:\n{''.join(output[-80:])}")


def assert_outputs_whole(work: Path) -> None:
    """Every result file on disk opens: a killed writer never leaves a truncated file under its name."""
    for p in work.glob("results/**/*"):
        if not p.is_file() or "/." in str(p.relative_to(work)):
            continue  # hidden: temporary files and checkpoint work directories
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".h5ad":
            with h5py.File(p, "r") as f:
                assert "obs" in f, p
        elif p.suffix in (".csv", ".tsv"):
            pd.read_csv(p, sep="\t" if p.suffix == ".tsv" else ",")
        elif p.suffix in (".pt",):
            assert p.stat().st_size > 0, p


def test_killed_at_20_points_resumes_to_identical_tables(tiny_run, tmp_path):
    work = tmp_path / "killed"
    work.mkdir()
    args = ("-d", work, "--configfile", TINY, "--config", FAULT_METHODS)
    rng = random.Random(20261122)
    kills: list = []
    for kind in KILL_PLAN:
        if not run_and_kill(work, kind, rng, kills):
            break
        assert_outputs_whole(work)
        # what a user does after a crash: Snakemake's stale lock is removed, then the same command
        snakemake(*args, "--unlock", cwd=ROOT)
    print(f"{len(kills)} kills (kind, job, jobs of that kind started):", kills)
    assert len(kills) >= 20, kills
    kinds = {k for k, _, _ in kills}
    assert {"data", "pretrain", "checkpoint", "embed", "score", "report"} <= kinds, kills
    final = snakemake(*args, "--cores", "2", cwd=ROOT)
    resumed = [p.name for p in work.glob("logs/pretrain/*.log") if "resumed from" in p.read_text()]
    assert resumed, "no pretraining resumed from a checkpoint"
    assert "Nothing to be done" in snakemake(*args, "-n", cwd=ROOT).stdout
    assert_outputs_whole(work)
    ref, got = _tables(tiny_run), _tables(work)
    # the fault run has no controls, so no <table>_scaled.csv (a pure function of the same records as its table)
    ref = {k: v for k, v in ref.items() if not k.endswith("_scaled.csv")}
    assert len(ref) == 8 and ref.keys() == got.keys()
    for name in ref:
        ref_lines, got_lines = ref[name].decode().splitlines(), got[name].decode().splitlines()
        assert got_lines[0] == ref_lines[0], name  # the same columns
        # the methods of this run, and every row that is not a method (baselines such as "chance", "previous
        # snapshot": computed from the data, the same whichever methods run)
        wanted = [line for line in ref_lines[1:]
                  if line.split(",")[0] in FAULT_LABELS or _label_of_row(line) not in TINY_LABELS]
        assert got_lines[1:] == wanted, f"{name} differs after {len(kills)} kills {kills}:\n{final.stdout[-2000:]}"


BROKEN_RULES = '''
rule embed_broken:
    input:
        data=processed_input,
    output:
        emb="results/embeddings/{method}/{dataset}.h5ad",
    wildcard_constraints:
        method="broken_nan|broken_rows",
    params:
        kind="{method}",
    log:
        "logs/embed/{method}/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    script:
        "broken.py"
'''

BROKEN_SCRIPT = '''
import anndata as ad
import numpy as np
from scjepa.io import write_h5ad

adata = ad.read_h5ad(snakemake.input.data)
emb = np.random.default_rng(0).normal(size=(adata.n_obs, 4)).astype("float32")
obs = adata.obs
if snakemake.params.kind == "broken_nan":
    emb[::7] = np.nan
else:
    emb, obs = emb[:-3], obs.iloc[:-3]
write_h5ad(ad.AnnData(obs=obs, obsm={"X_emb": emb}), snakemake.output.emb)
'''


def test_keep_going_turns_a_failing_method_into_failed_cells(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    (wf / "workflow" / "rules" / "methods" / "broken.smk").write_text(textwrap.dedent(BROKEN_RULES))
    (wf / "workflow" / "rules" / "methods" / "broken.py").write_text(textwrap.dedent(BROKEN_SCRIPT))
    targets = ["results/tables/table1_in_distribution.csv", "results/tables/table_integration.csv",
               "results/tables/table3_spatial.csv"]
    cfg = tmp_path / "tiny_broken.yaml"
    text = TINY.read_text()
    methods_line = next(line for line in text.splitlines() if line.startswith("methods:"))
    cfg.write_text(text.replace(methods_line, "methods: [pca, broken_nan, broken_rows]").replace(
        "method_params:\n", "method_params:\n  broken_nan: {family: broken}\n  broken_rows: {family: broken}\n"))
    args = ["--configfile", cfg, "--cores", "2"]
    proc = snakemake(*args, "--keep-going", *targets, cwd=wf, snakefile=wf / "Snakefile", check=False)
    out = proc.stdout
    assert proc.returncode != 0, out[-3000:]
    # the malformed embeddings are rejected by name, with what is wrong
    assert "results/embeddings/broken_nan/id_new_donors.h5ad" in out and "NaN/inf" in out, out[-4000:]
    assert "results/embeddings/broken_rows/id_new_donors.h5ad" in out and "rows but the processed" in out
    for t in targets:
        md = (wf / t).with_suffix(".md").read_text()
        rows = {r.split("|")[1].strip(): r for r in md.splitlines() if r.startswith("| ")}
        assert "failed" in rows["broken_nan"] and "failed" in rows["broken_rows"], md
        pca = [c.strip() for c in rows["PCA"].strip("|").split("|")[1:]]
        assert "failed" not in pca and any(re.match(r"^\**\d", c) for c in pca), md
        assert "--keep-going" in md
        assert (wf / t).stat().st_mtime == 0  # outdated on purpose: the next run rebuilds it
    # the partial tables hold PCA's real numbers: the same as a run without the broken methods
    snakemake("--configfile", cfg, "--config", "methods=[pca]", "--cores", "2", "-d", tmp_path / "pca_only",
              targets[0], cwd=wf, snakefile=wf / "Snakefile")
    assert _row(wf / targets[0], "PCA") == _row(tmp_path / "pca_only" / targets[0], "PCA")
    # a rerun retries exactly the failed jobs (and the tables), nothing that succeeded
    dry = snakemake(*args, "-n", *targets, cwd=wf, snakefile=wf / "Snakefile").stdout
    rerun = {m.group(1) for m in map(JOB_LINE.match, dry.splitlines()) if m}
    assert rerun <= {"score_zero_shot", "score_integration", "score_spatial",
                     "table_in_distribution", "table_integration", "table_spatial"}, rerun
    assert "score_zero_shot" in rerun and "table_in_distribution" in rerun
    assert not any("pca" in line for line in dry.splitlines() if "wildcards:" in line), dry


# --------------------------------------------------------------------------- determinism

def _row(csv: Path, label: str) -> str:
    return next(line for line in csv.read_text().splitlines() if line.startswith(label + ","))


def test_another_seed_gives_other_numbers(tiny_run, tmp_path):
    """Same seed, same bytes is checked by the fault-injection run (and the --keep-going run); here: a
    different seed changes the training (initialisation, views, batches), so scJEPA's row differs.
    PCA's row may not: the datasets carry their own seeds and the PCA fit is deterministic."""
    target = "results/tables/table1_in_distribution.csv"
    work = tmp_path / "seed1"
    snakemake("-d", work, "--configfile", TINY, "--config", "methods=[pca,scjepa]", "seed=1", "--cores", "2",
              target, cwd=ROOT)
    assert _row(work / target, "scJEPA") != _row(tiny_run / target, "scJEPA")


# --------------------------------------------------------------------------- rerun scope

def _planned_jobs(work: Path, configfile: Path = TINY) -> list[tuple[str, str]]:
    """(rule, wildcards line) of every job a dry run would execute."""
    out = snakemake("-d", work, "--configfile", configfile, "-n", cwd=ROOT).stdout
    jobs, current = [], None
    for line in out.splitlines():
        m = JOB_LINE.match(line)
        if m:
            current = m.group(1)
            jobs.append([current, ""])
        elif current and line.strip().startswith("wildcards:"):
            jobs[-1][1] = line.strip()
    return [tuple(j) for j in jobs]


#: the rules that draw a figure (the summary and cost rules draw theirs next to their tables)
FIGURE_RULES = {"figure_integration", "figure_spatial", "figure_training_dynamics", "figure_bridge", "report_summary",
                "report_cost"}


def test_figure_style_change_redraws_figures_only(tiny_run, tmp_path):
    cfg = tmp_path / "tiny_style.yaml"
    old = "report: {formats: [png], dpi: 80}"
    assert old in TINY.read_text()
    cfg.write_text(TINY.read_text().replace(old, "report: {formats: [png], dpi: 90, style: {axes.titlesize: 12}}"))
    jobs = _planned_jobs(tiny_run, cfg)
    rules = {r for r, _ in jobs} - {"all"}
    assert rules == FIGURE_RULES, jobs


def test_editing_the_plotting_code_redraws_figures_only(tiny_run):
    from scjepa.report import figures

    path = Path(figures.__file__)
    st, text = path.stat(), path.read_bytes()
    try:  # an edit of the plotting module (Snakemake ignores a bare touch: the checksum is unchanged)
        path.write_bytes(text + b"\n# a style edit\n")
        rules = {r for r, _ in _planned_jobs(tiny_run)} - {"all"}
    finally:
        path.write_bytes(text)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert rules == FIGURE_RULES, rules


def test_hyperparameter_change_reruns_that_method_and_its_dependents_only(tiny_run, tmp_path):
    cfg = tmp_path / "tiny_changed.yaml"
    text = TINY.read_text()
    old = "scjepa: {family: scjepa, label: scJEPA, gpu: 1, hparams: {sigreg_directions: 32}}"
    assert old in text
    cfg.write_text(text.replace(old, old.replace("sigreg_directions: 32", "sigreg_directions: 16")))
    out = snakemake("-d", tiny_run, "--configfile", cfg, "-n", cwd=ROOT).stdout
    jobs = [m.group(1) for m in map(JOB_LINE.match, out.splitlines()) if m]
    wildcards = [line.strip() for line in out.splitlines() if line.strip().startswith("wildcards:")]
    assert "pretrain_scjepa" in jobs and "embed_scjepa" in jobs and "score_finetune" in jobs
    assert not {"generate_synthetic", "preprocess", "build_store", "define_gene_space"} & set(jobs)
    assert {j for j in jobs if j.startswith(("pretrain_", "embed_"))} == {"pretrain_scjepa", "embed_scjepa"}, jobs
    for w in wildcards:
        if "method=" in w:
            assert "method=scjepa," in w + ",", w  # the ablation scjepa_no_recon and the others are untouched
