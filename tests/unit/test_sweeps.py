"""Sweeps: the grid expands into the named variants, and a variant is scored on validation cells only."""

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

from scjepa import config as cfg
from scjepa.errors import InputError
from scjepa.report.sweep import sweep_table
from scjepa.tasks.sweep import validation_score

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _config(sweeps):
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["method_params"]["dae"] = {"family": "scjepa", "hparams": {"lejepa": False}}
    raw["sweeps"] = sweeps
    return cfg.validate(raw)


def test_grid_expands_into_named_variants_with_merged_hparams():
    c = _config({"loss": {"method": "dae", "grid": {"lambda_sigreg": [0.05, 0.2], "gamma_recon": [1e-3, 1e-2, 0.1]},
                          "seeds": [0, 7]}})
    v = cfg.sweep_variants(c)
    assert len(v) == 2 * 3 * 2
    assert list(v)[:3] == ["loss_p00_s0", "loss_p00_s7", "loss_p01_s0"]
    e = v["loss_p05_s7"]  # last grid point: lambda 0.2, gamma 0.1 (first key slowest)
    assert e["point"] == {"lambda_sigreg": 0.2, "gamma_recon": 0.1}
    assert e["hparams"] == {"lejepa": False, "lambda_sigreg": 0.2, "gamma_recon": 0.1}  # the base's hparams kept
    assert (e["family"], e["seed"], e["base"], e["serves"], e["ablation_of"]) == ("scjepa", 7, "dae", [], None)
    assert e["label"] == "lambda_sigreg=0.2, gamma_recon=0.1"
    assert cfg.method_entry(c, "loss_p05_s7") == e
    # variants are not methods of the run: no evaluation table can list them
    assert not set(v) & set(c["methods"])


def test_default_seed_score_defaults_and_no_sweeps():
    c = _config({"s": {"method": "mae", "grid": {"mask_rate": [0.3, 0.5]}}})
    assert list(cfg.sweep_variants(c)) == ["s_p00_s0", "s_p01_s0"]
    assert c["sweeps"]["s"]["score"] == {"dataset": None, "k": None, "max_reference_cells": 20000,
                                         "max_query_cells": 20000, "metric": "knn_macro_f1"}
    assert cfg.sweep_variants(_config({})) == {}


@pytest.mark.parametrize("sweep, key", [
    ({"method": "nope", "grid": {"a": [1]}}, "sweeps.s.method"),
    ({"method": "random", "grid": {"a": [1]}}, "sweeps.s.method"),  # a control is not tuned
    ({"method": "scjepa", "grid": {"a": [1]}, "score": {"dataset": "timecourse_branching"}}, "sweeps.s.score.dataset"),
    ({"method": "scjepa", "grid": {"a": [1]}, "score": {"dataset": "missing"}}, "sweeps.s.score.dataset"),
    ({"method": "scjepa", "grid": {}}, "sweeps.s.grid"),
])
def test_bad_sweeps_name_the_key(sweep, key):
    with pytest.raises(InputError) as exc:
        _config({"s": sweep})
    assert exc.value.key == key


def test_a_variant_name_may_not_shadow_a_method():
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["method_params"]["s_p00_s0"] = {"family": "pca"}
    raw["sweeps"] = {"s": {"method": "mae", "grid": {"mask_rate": [0.3]}}}
    with pytest.raises(InputError, match="also method names"):
        cfg.validate(raw)


def _embedding(seed=0, n=600):
    rng = np.random.default_rng(seed)
    labels = rng.choice(["a", "b", "c"], n)
    centres = {"a": [0, 0], "b": [3, 0], "c": [0, 3]}
    emb = np.array([centres[x] for x in labels], float) + rng.normal(0, 1.0, (n, 2))
    split = rng.choice(["train", "val", "test"], n, p=[0.6, 0.2, 0.2])
    obs = pd.DataFrame({"cell_type": labels, "split": split}, index=[f"c{i}" for i in range(n)])
    a = ad.AnnData(obs=obs)
    a.obsm["X_emb"] = emb.astype(np.float32)
    return a


def test_validation_score_never_reads_test_cells():
    a = _embedding()
    clean, conf = validation_score(a, k=5, max_reference_cells=10_000, max_query_cells=10_000)
    test = (a.obs["split"] == "test").to_numpy()
    poisoned = a.copy()
    poisoned.obsm["X_emb"][test] = 1e6 * np.random.default_rng(1).normal(size=(test.sum(), 2))
    poisoned.obs.loc[test, "cell_type"] = "never_seen"
    dirty, _ = validation_score(poisoned, k=5, max_reference_cells=10_000, max_query_cells=10_000)
    assert dirty == clean
    assert clean["n_query"] == (a.obs["split"] == "val").sum()
    assert clean["n_ref"] == (a.obs["split"] == "train").sum()
    assert clean["n_test_dropped"] == test.sum()
    assert (conf["reference_split"], conf["query_split"]) == ("train", "val")
    # scoring the test split instead would see the poisoned cells: the score is a different number
    swapped = poisoned.copy()
    swapped.obs["split"] = swapped.obs["split"].map({"val": "test", "test": "val", "train": "train"})
    other, _ = validation_score(swapped, k=5, max_reference_cells=10_000, max_query_cells=10_000)
    assert other["knn_macro_f1"] != clean["knn_macro_f1"]


def test_validation_score_draws_are_capped_and_seeded():
    a = _embedding(n=2000)
    m1, _ = validation_score(a, k=5, max_reference_cells=100, max_query_cells=50, seed=3)
    m2, _ = validation_score(a, k=5, max_reference_cells=100, max_query_cells=50, seed=3)
    assert m1 == m2 and (m1["n_ref"], m1["n_query"]) == (100, 50)


def _record(i, seed, f1):
    return {"task": "sweep", "method": f"s_p{i:02d}_s{seed}", "dataset": "corpus", "seed": None, "status": "ok",
            "metrics": {"knn_macro_f1": f1, "knn_micro_f1": f1, "knn_accuracy": f1},
            "config": {"point_index": i, "pretraining_seed": seed}}


def test_sweep_table_mean_over_seeds_and_the_choice():
    points = [{"lam": 0.05}, {"lam": 0.2}]
    recs = [_record(0, 0, 0.5), _record(0, 1, 0.7), _record(1, 0, 0.8), _record(1, 1, 0.8)]
    t = sweep_table("s", recs, points, seeds=[0, 1], dataset="corpus", base="scjepa")
    assert t.row_labels == ["lam=0.05", "lam=0.2"]
    assert t.cells[0][0].mean == pytest.approx(0.6) and t.cells[0][0].sd == pytest.approx(math.sqrt(0.02))
    assert t.cells[1][0].best and not t.cells[0][0].best
    assert t.notes[0] == "Chosen (best kNN macro-F1 on val): lam=0.2."
    # a missing seed is shown as partial, never silently averaged as complete
    t2 = sweep_table("s", recs[1:], points, seeds=[0, 1], dataset="corpus", base="scjepa")
    assert t2.cells[0][0].partial
