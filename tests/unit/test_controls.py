"""Controls: the floor and the ceiling of every score."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scjepa.errors import InputError
from scjepa.knn import knn_predict
from scjepa.methods.controls import Control, label_embedding


def toy(n=300, types=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array([f"t{i % types}" for i in range(n)])
    X = sp.csr_matrix(rng.poisson(1.0, (n, 40)).astype(np.float32))
    obs = pd.DataFrame({"cell_type": labels, "batch": rng.choice(["a", "b"], n)}, index=[f"c{i}" for i in range(n)])
    a = ad.AnnData(X=X, obs=obs)
    a.uns["dataset"] = "toy"
    return a


def test_label_centres_are_orthonormal_and_noise_has_its_sd():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 2000)
    Z = label_embedding(labels, 16, 0.0, rng)
    centres = np.stack([Z[labels == c][0] for c in "abc"])
    G = centres @ centres.T
    np.testing.assert_allclose(np.diag(G), 1.0, atol=1e-6)  # unit vectors ...
    assert np.abs(G[~np.eye(3, dtype=bool)]).max() < 0.7  # ... of distinct directions
    Z = label_embedding(labels, 16, 0.5, np.random.default_rng(0))
    resid = Z[labels == "a"] - Z[labels == "a"].mean(0)
    assert resid.std() == pytest.approx(0.5 / 4, rel=0.03)  # typical noise length 0.5 in 16 dims


def test_positive_control_classifies_and_negative_does_not():
    a = toy()
    pos = Control("labels", dim=16, noise=0.3).fit_transform(a)
    neg = Control("random", dim=16).fit_transform(a)
    perm = np.random.default_rng(1).permutation(300)
    ref, qry = perm[:150], perm[150:]
    y = a.obs["cell_type"].to_numpy()
    acc = lambda Z: (knn_predict(Z[ref], y[ref], Z[qry], k=5) == y[qry]).mean()  # noqa: E731
    assert acc(pos) == 1.0
    assert acc(neg) < 0.35  # chance is 1/6


def test_label_centres_are_shared_across_datasets():
    a, b = toy(), toy(seed=1)
    b.uns["dataset"] = "other"
    za, zb = Control("labels", dim=32, noise=0.0).fit_transform(a), Control("labels", dim=32, noise=0.0).fit_transform(b)
    ia, ib = np.flatnonzero(a.obs["cell_type"] == "t2")[0], np.flatnonzero(b.obs["cell_type"] == "t2")[0]
    np.testing.assert_array_equal(za[ia], zb[ib])


def test_controls_are_deterministic_per_dataset_and_shaped():
    a = toy()
    z1, z2 = Control("random", dim=8, seed=3).fit_transform(a), Control("random", dim=8, seed=3).fit_transform(a)
    np.testing.assert_array_equal(z1, z2)
    a.uns["dataset"] = "other"
    assert not np.array_equal(z1, Control("random", dim=8, seed=3).fit_transform(a))
    u = Control("unintegrated", dim=10).fit_transform(toy())
    assert u.shape == (300, 10) and u.dtype == np.float32 and np.isfinite(u).all()


def test_bad_control_settings_name_the_key():
    with pytest.raises(InputError, match="kind"):
        Control("oracle")
    a = toy()
    a.obs = a.obs.drop(columns="cell_type")
    with pytest.raises(InputError, match="cell_type"):
        Control("labels").fit_transform(a, path="x.h5ad")


def test_tables_mark_controls_and_never_make_them_bold():
    from scjepa.report.tables import CONTROL_NOTE, make_table, mark_controls, to_markdown

    recs = [{"task": "zero_shot", "method": m, "dataset": "d", "seed": None, "status": "ok",
             "metrics": {"knn_macro_f1": v}} for m, v in [("labels", 0.99), ("pca", 0.8), ("random", 0.1), ("mae", 0.7)]]
    t = make_table(recs, ["labels", "pca", "random", "mae"], ["d"], "knn_macro_f1", task="zero_shot",
                   row_labels={"labels": "Labels + noise", "random": "Random"})
    assert t.cells[0][0].best  # before marking, the ceiling wins the column
    mark_controls(t, {"labels": "positive", "random": "negative"})
    assert t.rows == ["pca", "mae", "labels", "random"]
    assert t.row_labels[2:] == ["Labels + noise (pos. control)", "Random (neg. control)"]
    assert [line[0].best for line in t.cells] == [True, False, False, False]
    md = to_markdown(t)
    assert "**0.800**" in md and "**0.990**" not in md and CONTROL_NOTE in md


def test_a_control_must_say_what_it_is_and_what_it_serves():
    import yaml

    from scjepa.config import validate

    cfg = yaml.safe_load(open("tests/workflow/tiny.yaml"))
    cfg["methods"].append("rand")
    cfg["method_params"]["rand"] = {"family": "control", "hparams": {"kind": "random"}, "serves": ["zero_shot"]}
    with pytest.raises(InputError, match="method_params.rand.control"):
        validate(cfg)
    cfg["method_params"]["rand"].update(control="negative", serves=[])
    with pytest.raises(InputError, match="method_params.rand.serves"):
        validate(cfg)
    cfg["method_params"]["rand"]["serves"] = ["finetune"]
    with pytest.raises(InputError, match="cannot serve 'finetune'"):
        validate(cfg)


def _rec(method, dataset, value, metric="knn_macro_f1", task="zero_shot"):
    return {"task": task, "method": method, "dataset": dataset, "seed": None, "status": "ok", "metrics": {metric: value},
            "config": {}}


def test_scores_scaled_between_the_controls_by_hand():
    from scjepa.report.tables import make_table, mark_controls, scale_to_controls

    recs = [_rec("a", "d", 0.6), _rec("b", "d", 0.9), _rec("rand", "d", 0.2), _rec("rand2", "d", 0.3),
            _rec("lab", "d", 1.0)]
    controls = {"rand": "negative", "rand2": "negative", "lab": "positive"}
    t = mark_controls(make_table(recs, ["a", "b", "rand", "rand2", "lab"], ["d"], "knn_macro_f1"), controls)
    s = scale_to_controls(t, controls)
    # the floor is the best negative control (0.3), the ceiling the positive one (1.0): (0.6-0.3)/0.7, (0.9-0.3)/0.7
    assert s.rows == ["a", "b"]
    assert [line[0].mean for line in s.cells] == pytest.approx([0.3 / 0.7, 0.6 / 0.7])
    assert s.cells[1][0].best and not s.cells[0][0].best
    # lower is better (a distance): floor 3.0, ceiling 1.0, a at 2.0 is half way; scaled values read "higher is better"
    recs = [_rec("a", "d", 2.0, "w1"), _rec("rand", "d", 3.0, "w1"), _rec("lab", "d", 1.0, "w1")]
    t = make_table(recs, ["a", "rand", "lab"], ["d"], "w1", higher_is_better=False)
    s = scale_to_controls(t, {"rand": "negative", "lab": "positive"})
    assert s.cells[0][0].mean == pytest.approx(0.5) and s.columns[0].higher_is_better
    # no positive control: nothing to scale to
    assert scale_to_controls(t, {"rand": "negative"}) is None
