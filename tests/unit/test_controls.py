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
    np.testing.assert_allclose(centres @ centres.T, np.eye(3), atol=1e-6)  # one-hot, rotated
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
