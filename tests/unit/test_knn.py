"""The one kNN scorer (zero-shot annotation), the F1 scorers, embedding readers, spatial transfer."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from scjepa.errors import InputError
from scjepa.contracts import read_embedding, score_record
from scjepa.knn import knn_predict, score_annotation
from scjepa.tasks.knn import zero_shot
from scjepa.tasks.spatial import cross_platform_transfer, read_predictions, spatial_scores, write_predictions

SCRIPTS = Path(__file__).resolve().parents[2] / "workflow" / "scripts"


# ------------------------------------------------------------------ F1 scorers


def test_score_annotation_hand_computed():
    # per class: a: TP1 FP1 FN1 -> F1 0.5; b: TP2 FP1 FN0 -> P 2/3, R 1, F1 0.8; c: TP0 -> F1 0
    y_true = ["a", "a", "b", "b", "c"]
    y_pred = ["a", "b", "b", "b", "a"]
    s = score_annotation(y_true, y_pred)
    assert s["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert s["micro_f1"] == pytest.approx(3 / 5)
    assert s["accuracy"] == pytest.approx(3 / 5)
    assert s["weighted_f1"] == pytest.approx((2 * 0.5 + 2 * 0.8 + 1 * 0.0) / 5)
    assert s["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_unseen_query_label_counts_as_error_in_macro_f1():
    # "d" is never predicted (absent from any reference): F1_d = 0 joins the macro average.
    s = score_annotation(["a", "a", "d"], ["a", "a", "a"])
    # a: TP2 FP1 -> P 2/3 R 1 F1 0.8; d: 0
    assert s["macro_f1"] == pytest.approx(0.4)
    assert s["micro_f1"] == pytest.approx(2 / 3)


def test_score_annotation_agrees_with_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    y_true = rng.choice(list("abcdef"), 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.choice(list("abcdefg"), 300))
    s = score_annotation(y_true, y_pred)
    for avg in ("macro", "micro", "weighted"):
        assert s[f"{avg}_f1"] == pytest.approx(f1_score(y_true, y_pred, average=avg, zero_division=0))


# ------------------------------------------------------------------ kNN


def test_knn_majority_vote_known_answer():
    ref = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    lab = np.array(["a", "a", "a", "b", "b"])
    q = np.array([[0.5], [10.4], [6.5]])
    # 6.5: neighbours 10 (3.5), 11 (4.5), 2 (4.5) -> k=3 vote b, b, a -> b
    assert list(knn_predict(ref, lab, q, k=3)) == ["a", "b", "b"]


def test_knn_tie_goes_to_nearest_class():
    ref = np.array([[0.0], [3.0]])
    lab = np.array(["z", "a"])  # alphabetical order must not decide
    assert list(knn_predict(ref, lab, np.array([[1.0], [2.0]]), k=2)) == ["z", "a"]


def test_knn_rejects_overlapping_ids():
    ref = np.zeros((3, 2))
    with pytest.raises(ValueError, match="both in the kNN reference and the query"):
        knn_predict(ref, ["a", "b", "c"], np.zeros((2, 2)), k=1, ref_ids=["c1", "c2", "c3"], query_ids=["q1", "c2"])


def test_query_identical_to_reference_point_uses_that_reference_cell():
    # No "drop the first neighbour" quirk: a distinct cell at distance 0 is a legitimate neighbour.
    ref = np.array([[0.0, 0.0], [5.0, 5.0], [5.1, 5.0]])
    pred = knn_predict(ref, ["a", "b", "b"], np.array([[0.0, 0.0]]), k=1, ref_ids=["r1", "r2", "r3"], query_ids=["q1"])
    assert list(pred) == ["a"]


def _emb_adata(n=120, seed=0, unseen=False):
    rng = np.random.default_rng(seed)
    labels = np.array(["t1", "t2", "t3"])[np.arange(n) % 3]
    emb = (np.eye(3)[np.arange(n) % 3] * 6 + rng.normal(0, 1, (n, 3))).astype(np.float32)
    split = np.where(np.arange(n) < n * 0.7, "train", "test")
    if unseen:
        labels = labels.astype(object)
        labels[-5:] = "novel"  # only in the test split
    obs = pd.DataFrame({"cell_type": labels, "split": split}, index=[f"cell{i}" for i in range(n)])
    a = ad.AnnData(obs=obs)
    a.obsm["X_emb"] = emb
    return a


def test_zero_shot_reports_unseen_labels_and_probe():
    a = _emb_adata(unseen=True)
    metrics, preds = zero_shot(a, k=5)
    assert metrics["n_query_unseen_labels"] == 5
    assert metrics["n_ref"] + metrics["n_query"] == a.n_obs
    assert set(preds["knn"]) <= {"t1", "t2", "t3"}  # "novel" can never be predicted
    assert metrics["knn_micro_f1"] == pytest.approx(metrics["knn_accuracy"])
    assert metrics["knn_micro_f1"] <= 1 - 5 / metrics["n_query"] + 1e-9
    assert 0.8 < metrics["probe_micro_f1"] <= 1.0


def test_zero_shot_refuses_same_split():
    with pytest.raises(InputError, match="same split"):
        zero_shot(_emb_adata(), ref_split="test", query_split="test")


# ------------------------------------------------------------------ readers and records


def test_read_embedding_checks(tmp_path):
    a = _emb_adata()
    good = tmp_path / "good.h5ad"
    a.write_h5ad(good)
    assert read_embedding(good, a.obs_names).obsm["X_emb"].dtype == np.float32
    with pytest.raises(InputError, match="good.h5ad.*processed dataset has 119"):
        read_embedding(good, a.obs_names[:-1])
    bad = a.copy()
    bad.obsm["X_emb"][3, 1] = np.nan
    bad.write_h5ad(tmp_path / "nan.h5ad")
    with pytest.raises(InputError, match="nan.h5ad.*NaN/inf in 1 of"):
        read_embedding(tmp_path / "nan.h5ad")
    missing = ad.AnnData(obs=a.obs.copy())
    missing.write_h5ad(tmp_path / "noemb.h5ad")
    with pytest.raises(InputError, match="noemb.h5ad.*X_emb"):
        read_embedding(tmp_path / "noemb.h5ad")


def test_score_record_is_flat_and_finite():
    rec = score_record("zero_shot", "m", "d", {"knn_macro_f1": np.float32(0.5), "n": 3})
    assert rec["metrics"] == {"knn_macro_f1": 0.5, "n": 3.0} and rec["status"] == "ok" and rec["seed"] is None
    with pytest.raises(ValueError):
        score_record("zero_shot", "m", "d", {"x": float("nan")})
    with pytest.raises(TypeError):
        score_record("zero_shot", "m", "d", {"x": {"nested": 1}})


def _fake_snakemake(tmp_path, **kw):
    ns = {k: SimpleNamespace(**v) for k, v in kw.items()}
    ns.setdefault("wildcards", SimpleNamespace())
    return SimpleNamespace(log=[str(tmp_path / "log.txt")], **ns)


def test_score_zero_shot_script_writes_contract_record(tmp_path):
    a = _emb_adata(unseen=True)
    emb = tmp_path / "emb.h5ad"
    a.write_h5ad(emb)
    out = tmp_path / "scores" / "zero_shot" / "m" / "d.json"
    smk = _fake_snakemake(
        tmp_path,
        input={"emb": str(emb), "processed": str(emb)},
        output={"score": str(out)},
        params={"k": 5, "reference_split": "train", "query_split": "test", "probe": True, "seed": 0},
        wildcards={"method": "m", "dataset": "d"},
    )
    runpy.run_path(str(SCRIPTS / "score_zero_shot.py"), init_globals={"snakemake": smk})
    rec = json.loads(out.read_text())
    assert set(rec) == {"task", "method", "dataset", "seed", "status", "metrics", "config"}
    assert (rec["task"], rec["method"], rec["dataset"], rec["seed"], rec["status"]) == (
        "zero_shot",
        "m",
        "d",
        None,
        "ok",
    )
    assert rec["metrics"]["n_query_unseen_labels"] == 5.0
    assert rec["config"]["k"] == 5 and rec["config"]["ref_split"] == "train"


# ------------------------------------------------------------------ spatial transfer


def _two_platforms():
    ref = _emb_adata(150, seed=1)
    query = _emb_adata(90, seed=2)
    query.obs["cell_type"] = query.obs["cell_type"].astype(str)
    query.obs.loc[query.obs_names[:6], "cell_type"] = "spatial_only"
    query.obs["x"] = np.arange(query.n_obs, dtype=float)
    query.obs["y"] = 0.0
    # Same barcodes in both datasets: different cells, must not be mistaken for a self-match.
    assert len(set(ref.obs_names) & set(query.obs_names)) > 0
    return ref, query


def test_cross_platform_transfer_scores_shared_labels_only():
    ref, query = _two_platforms()
    m, pred = cross_platform_transfer(ref, query, ref_name="dissociated", query_name="spatial")
    assert m["transfer_n_shared_labels"] == 3
    assert m["transfer_n_query_unshared"] == 6 and m["transfer_n_query"] == query.n_obs - 6
    assert len(pred) == query.n_obs
    assert m["transfer_macro_f1"] > 0.9  # the blobs are well separated in both datasets


def test_transfer_with_itself_as_reference_is_refused():
    ref, _ = _two_platforms()
    with pytest.raises(ValueError, match="never be its own neighbour"):
        cross_platform_transfer(ref, ref, ref_name="same", query_name="same")


def test_transfer_without_shared_labels_names_the_file():
    ref, query = _two_platforms()
    query.obs["cell_type"] = "other"
    with pytest.raises(InputError, match="q.h5ad.*shares no 'cell_type' label"):
        cross_platform_transfer(ref, query, ref_name="r", query_name="q", query_path="q.h5ad")


def test_spatial_scores_and_predictions_roundtrip(tmp_path):
    ref, query = _two_platforms()
    m, preds, cfg = spatial_scores(query, ref, spatial_name="spatial", reference_name="dissociated")
    assert {"knn_macro_f1", "probe_macro_f1", "transfer_macro_f1"} <= set(m)
    assert (preds["pred_knn"] != "").sum() == m["n_query"]
    write_predictions(preds, tmp_path / "p.csv")
    back = read_predictions(tmp_path / "p.csv")
    assert list(back["pred_transfer"]) == list(preds["pred_transfer"])
    assert np.allclose(back["x"], preds["x"])


def test_score_spatial_script(tmp_path):
    ref, query = _two_platforms()
    ref.write_h5ad(tmp_path / "ref.h5ad")
    query.write_h5ad(tmp_path / "spatial.h5ad")
    out = tmp_path / "spatial" / "m" / "sp.json"
    smk = _fake_snakemake(
        tmp_path,
        input={"emb": str(tmp_path / "spatial.h5ad"), "ref_emb": str(tmp_path / "ref.h5ad"),
               "processed": str(tmp_path / "spatial.h5ad"), "ref_processed": str(tmp_path / "ref.h5ad")},
        output={"score": str(out), "predictions": str(tmp_path / "sp.predictions.csv")},
        params={"reference": "dissociated", "k": 5, "reference_split": "train", "query_split": "test",
                "probe": True, "seed": 0},
        wildcards={"method": "m", "dataset": "sp"},
    )
    runpy.run_path(str(SCRIPTS / "score_spatial.py"), init_globals={"snakemake": smk})
    rec = json.loads(out.read_text())
    assert rec["task"] == "spatial" and rec["status"] == "ok" and rec["config"]["reference"] == "dissociated"
    assert rec["metrics"]["transfer_n_shared_labels"] == 3
    assert len(read_predictions(tmp_path / "sp.predictions.csv")) == query.n_obs
