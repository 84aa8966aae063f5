"""A user's own config, run as a user types it from the repository root: it replaces the demo config
(never merged into it), local files are followed by content, a missing file fails before any job runs."""

import os
import re
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from wfhelpers import ROOT, snakemake

pytestmark = pytest.mark.slow

PLANNED_DATASET = re.compile(r"(?:resources/datasets|results/data|results/embeddings/[^/\s]+)/([^/\s]+?)(?:/|\.h5ad)")


def planned_datasets(out: str) -> set[str]:
    """Every dataset a dry run's plan touches, from its output paths and wildcards."""
    names = set(PLANNED_DATASET.findall(out))
    for m in re.finditer(r"wildcards:.*", out):
        names |= set(re.findall(r"dataset=([^,\s]+)", m.group(0)))
    return names


def write_counts(path, n=240, donors=6, seed=0, genes=60, nan_at=None):
    rng = np.random.default_rng(seed)
    X = rng.poisson(2.0, (n, genes)).astype(np.float32)
    if nan_at is not None:
        X[nan_at] = np.nan
    obs = pd.DataFrame({"cell_type": rng.choice(["T", "B", "NK"], n), "donor_id": [f"d{i % donors}" for i in range(n)]},
                       index=[f"cell{i}" for i in range(n)])
    ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"gene{j}" for j in range(genes)])).write_h5ad(path)


def test_paper_config_from_the_root_plans_only_its_own_datasets(tmp_path):
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    # the two hand-exported inputs, as a user would point at them: a second --configfile merges into the first
    local = {d: e for d, e in paper["datasets"].items() if e["source"] == "local"}
    override = {"datasets": {}}
    for d in local:
        write_counts(tmp_path / f"{d}.h5ad")
        override["datasets"][d] = {"path": str(tmp_path / f"{d}.h5ad")}
    (tmp_path / "where.yaml").write_text(yaml.safe_dump(override))
    out = snakemake("-n", "--configfile", "config/paper.yaml", tmp_path / "where.yaml", cwd=ROOT).stdout
    planned = planned_datasets(out)
    assert planned and planned <= set(paper["datasets"]), planned - set(paper["datasets"])
    assert "generate_synthetic" not in out
    assert {"hlca", "sctab"} <= planned


def test_a_one_dataset_config_plans_only_that_dataset(tmp_path):
    write_counts(tmp_path / "mine.h5ad")
    cfg = {"corpus": "mine", "methods": ["pca"],
           "datasets": {"mine": {"source": "local", "path": str(tmp_path / "mine.h5ad"),
                                 "roles": ["pretrain", "in_distribution"],
                                 "columns": {"cell_type": "cell_type", "donor": "donor_id"}}}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake("-n", "--configfile", tmp_path / "mine.yaml", cwd=ROOT).stdout
    assert planned_datasets(out) == {"mine"}
    assert "pretrain_scjepa" not in out and "pretrain_pca" in out


def test_no_configfile_is_the_demo_and_config_edits_it():
    demo = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    out = snakemake("-n", "--config", "methods=[pca]", cwd=ROOT).stdout
    assert planned_datasets(out) == set(demo["datasets"]) or "Nothing to be done" in out
    assert "pretrain_scjepa" not in out


def test_a_missing_local_file_fails_before_any_job(tmp_path):
    cfg = {"corpus": "mine", "methods": ["pca"],
           "datasets": {"mine": {"source": "local", "path": str(tmp_path / "typo.h5ad"), "roles": ["pretrain"],
                                 "columns": {"cell_type": "cell_type", "donor": "donor_id"}}}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", tmp_path / "mine.yaml", cwd=ROOT, check=False)
    assert proc.returncode != 0
    assert "datasets.mine.path" in proc.stdout and "typo.h5ad" in proc.stdout and "does not exist" in proc.stdout


def test_a_local_file_fixed_in_place_is_used_and_a_touch_reruns_nothing(tmp_path):
    user_file = tmp_path / "my_cells.h5ad"
    write_counts(user_file, nan_at=(5, 3))
    cfg = {"corpus": "mine", "methods": ["pca"],
           "datasets": {"mine": {"source": "local", "path": str(user_file), "roles": ["pretrain"],
                                 "columns": {"cell_type": "cell_type", "donor": "donor_id"}}}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    target = "results/data/mine/processed.h5ad"
    base = ("-d", work, "--configfile", tmp_path / "mine.yaml", "--cores", "1")
    args = (*base, target)
    proc = snakemake(*args, cwd=ROOT, check=False)
    assert proc.returncode != 0
    log = (work / "logs" / "preprocess" / "mine.log").read_text()
    assert f"file '{user_file}'" in log and "datasets.mine" in log and "NaN" in log
    assert not (work / target).exists()

    write_counts(user_file)  # the user fixes the file the error named, in place
    snakemake(*args, cwd=ROOT)  # no --forcerun
    assert ad.read_h5ad(work / target).X.sum() > 0

    time.sleep(1.1)
    os.utime(user_file)  # touched, same content: nothing reruns
    out = snakemake(*base, "-n", target, cwd=ROOT).stdout
    assert "Nothing to be done" in out, out[-3000:]

    write_counts(user_file, seed=1)  # new content: its jobs rerun
    out = snakemake(*base, "-n", target, cwd=ROOT).stdout
    assert "link_local_h5ad" in out and "preprocess" in out
