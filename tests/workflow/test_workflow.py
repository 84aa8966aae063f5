"""End-to-end: the tiny config through every rule (the paper config: test_user_config.py, from the root)."""

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from wfhelpers import ROOT, TINY, snakemake

pytestmark = pytest.mark.slow

TABLES = ["table1_in_distribution", "table2_out_of_distribution", "table3_spatial", "table4_ablation",
          "table_integration", "table_bridge_interpolation", "table_bridge_fate", "table_bridge_perturbation",
          "table_summary", "table_cost"]


def test_every_table_and_figure_is_written(tiny_run):
    for t in TABLES:
        for ext in ("md", "csv", "tex"):
            f = tiny_run / "results" / "tables" / f"{t}.{ext}"
            assert f.exists() and f.stat().st_size > 0, f
    figs = {p.name for p in (tiny_run / "results" / "figures").iterdir()}
    for name in ("fig2_integration.png", "fig3_spatial_spatial_layers.png", "fig4_training_dynamics.png",
                 "fig5_bridge_timecourse_branching.png", "fig_summary.png", "fig_summary.pdf", "fig_cost.png",
                 "fig_cost.pdf"):
        assert name in figs


def test_tables_list_every_method_with_na_not_dropped(tiny_run):
    md = (tiny_run / "results" / "tables" / "table1_in_distribution.md").read_text()
    for label in ("PCA", "scJEPA", "scMAE", "scBT", "Supervised", "scVI", "Harmony"):
        assert f"| {label} |" in md, label
    pca_row = next(line for line in md.splitlines() if line.startswith("| PCA |"))
    assert "n/a" in pca_row  # PCA cannot be fine-tuned
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert not any("failed" in r for r in rows)
    csv = pd.read_csv(tiny_run / "results" / "tables" / "table2_out_of_distribution.csv")
    assert len(csv) >= 7


def test_embeddings_follow_the_method_contract(tiny_run):
    proc = ad.read_h5ad(tiny_run / "results" / "data" / "id_new_donors" / "processed.h5ad")
    for method in ("pca", "scjepa", "mae", "barlow_twins", "supervised"):
        emb = ad.read_h5ad(tiny_run / "results" / "embeddings" / method / "id_new_donors.h5ad")
        assert list(emb.obs_names) == list(proc.obs_names)
        assert np.isfinite(emb.obsm["X_emb"]).all() and emb.obsm["X_emb"].shape[0] == proc.n_obs


def test_score_records_name_their_config(tiny_run):
    rec = json.loads((tiny_run / "results" / "scores" / "zero_shot" / "scjepa" / "id_new_donors.json").read_text())
    assert rec["task"] == "zero_shot" and rec["status"] == "ok"
    assert 0 <= rec["metrics"]["knn_macro_f1"] <= 1


def test_rerun_is_a_no_op(tiny_run):
    out = snakemake("-d", tiny_run, "--configfile", TINY, "-n", cwd=ROOT).stdout
    assert "Nothing to be done" in out


def test_config_typo_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("preprocess: {chunk_size: 500}", "preprocess: {chunksize: 500}"))
    proc = snakemake("-d", tmp_path, "--configfile", bad, "-n", cwd=ROOT, check=False)
    assert proc.returncode != 0 and "chunksize" in proc.stdout and "preprocess" in proc.stdout


def test_unknown_method_name_fails_naming_it(tmp_path):
    proc = snakemake("-d", tmp_path, "--configfile", TINY, "--config", "methods=[pca,scjepa_typo]", "-n",
                     cwd=ROOT, check=False)
    assert proc.returncode != 0 and "scjepa_typo" in proc.stdout


def test_html_report_contains_every_table_and_figure(tiny_run):
    report = tiny_run / "report.html"
    snakemake("-d", tiny_run, "--configfile", TINY, "--report", report, cwd=ROOT)
    html = report.read_text(errors="replace")
    for name in ("fig2_integration.png", "fig3_spatial_spatial_layers.png", "fig4_training_dynamics.png",
                 "fig5_bridge_timecourse_branching.png", "table1_in_distribution.md", "table4_ablation.md",
                 "fig_summary.png", "table_summary.md", "fig_cost.png", "table_cost.md"):
        assert name in html, name
    # the landing page (workflow/report/workflow.rst) renders without reST errors and says what the run is
    assert "How to read the tables" in html and "Training budget" in html and "System Message" not in html


def test_summary_and_cost_list_every_method_and_control(tiny_run):
    summary = pd.read_csv(tiny_run / "results" / "tables" / "table_summary.csv", keep_default_na=False)
    cost = pd.read_csv(tiny_run / "results" / "tables" / "table_cost.csv", keep_default_na=False)  # "n/a" as written
    main = ["PCA", "scJEPA", "scMAE", "scBT", "Supervised", "scVI", "Harmony"]
    controls = ["Random (neg. control)", "Unintegrated PCs (neg. control)", "Labels + noise (pos. control)"]
    assert list(summary["method"]) == main + controls  # controls last, marked
    assert set(main + controls + ["w/o reconstruction"]) == set(cost["method"])
    # every readout of Table 1 is a summary column, and its rank-1 cell is Table 1's bold value
    t1 = (tiny_run / "results" / "tables" / "table1_in_distribution.md").read_text()
    assert "annotation / id_new_donors / kNN / macro-F1" in summary.columns and "**" in t1
    assert (summary["annotation / id_new_donors / kNN / macro-F1"] == "1").sum() >= 1
    # the default run embeds on the CPU: GPU-seconds are n/a, every embedding job has a benchmark file
    assert set(cost["GPU (s)"]) == {"n/a"}
    assert all(str(v).split("/")[0] == str(v).split("/")[1] for v in cost["datasets embedded"])
