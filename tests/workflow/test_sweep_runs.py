"""A sweep as a user runs it: the target before --configfile, a sweep file layered on a config, from the
repository root. Its variants are trained, embedded and scored on validation cells only, and never reach an
evaluation table."""

import csv
import json

import pytest
import yaml

from wfhelpers import ROOT, TINY, snakemake

pytestmark = pytest.mark.slow


def test_sweep_table_from_validation_cells_only(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"sweeps": {"lam": {
        "method": "scjepa", "hparams": {"max_steps": 6},
        "grid": {"lambda_sigreg": [0.05, 0.5]}, "seeds": [0, 1]}}}))
    work = tmp_path / "run"
    # what a user types (from the root; -d keeps the checkout clean)
    snakemake("results/tables/sweep_lam.md", "--cores", "2", "--configfile", TINY, sweep, "-d", work, cwd=ROOT)
    records = sorted((work / "results" / "sweeps" / "lam").glob("*.json"))
    assert [r.stem for r in records] == ["lam_p00_s0", "lam_p00_s1", "lam_p01_s0", "lam_p01_s1"]
    import anndata as ad

    obs = ad.read_h5ad(work / "results" / "data" / "corpus" / "processed.h5ad", backed="r").obs
    n_val, n_train, n_test = ((obs["split"] == s).sum() for s in ("val", "train", "test"))
    for path in records:
        rec = json.loads(path.read_text())
        assert rec["status"] == "ok" and rec["config"]["query_split"] == "val"
        assert rec["metrics"]["n_query"] == n_val and rec["metrics"]["n_ref"] == n_train
        assert rec["metrics"]["n_test_dropped"] == n_test > 0
    hp = json.loads((work / "results" / "models" / "lam_p01_s1" / "hparams.json").read_text())
    assert hp["lambda_sigreg"] == 0.5 and hp["seed"] == 1
    rows = list(csv.reader((work / "results" / "tables" / "sweep_lam.csv").open()))
    assert rows[0][0] == "grid point" and [r[0] for r in rows[1:]] == ["lambda_sigreg=0.05", "lambda_sigreg=0.5"]
    assert all("±" in r[1] for r in rows[1:])  # mean ± sd over the two pretraining seeds
    assert "Chosen (best kNN macro-F1 on val)" in (work / "results" / "tables" / "sweep_lam.md").read_text()
    assert (work / "results" / "figures" / "sweep_lam.png").stat().st_size > 0
    # the variants are no method of the run: a dry run of everything plans no evaluation job for them
    dry = snakemake("-n", "--cores", "2", "--configfile", TINY, sweep, "-d", work, cwd=ROOT).stdout
    assert "results/scores/zero_shot/lam_" not in dry and "results/scores/finetune/lam_" not in dry


def test_table4_is_its_own_run_layered_on_the_demo(tmp_path):
    """`make ablations`: the demo plus config/ablations.yaml plans the four ablations and Table 4; the demo alone
    plans neither. Each ablation trains with scJEPA's own λ and γ (ablation_of)."""
    both = snakemake("-n", "results/tables/table4_ablation.md", "--configfile", "config/config.yaml",
                     "config/ablations.yaml", "-d", tmp_path, cwd=ROOT).stdout
    for m in ("scjepa_no_recon", "scjepa_no_lejepa", "scjepa_2global", "scjepa_lejepa_window"):
        assert f"results/models/{m}" in both
    demo = snakemake("-n", "--configfile", "config/config.yaml", "-d", tmp_path, cwd=ROOT).stdout
    assert "table4_ablation" not in demo and "scjepa_no_recon" not in demo
    from scjepa import config as cfg

    c = cfg.validate({**yaml.safe_load((ROOT / "config" / "config.yaml").read_text()),
                      **{k: v for k, v in yaml.safe_load((ROOT / "config" / "ablations.yaml").read_text()).items()
                         if k != "method_params"}})
    c["method_params"].update(yaml.safe_load((ROOT / "config" / "ablations.yaml").read_text())["method_params"])
    base = cfg.method_entry(c, "scjepa")["hparams"]
    for m in ("scjepa_no_lejepa", "scjepa_2global"):
        hp = cfg.method_entry(c, m)["hparams"]
        assert all(hp[k] == v for k, v in base.items())
