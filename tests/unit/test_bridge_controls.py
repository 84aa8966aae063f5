"""The bridge's positive control: the generator's own state, kept through preprocessing (keep_obsm)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scjepa.data.genes import GeneSpace
from scjepa.data.preprocess import PreprocessConfig, preprocess
from scjepa.errors import InputError
from scjepa.io import read_h5ad
from scjepa.methods.controls import Control


def _raw(n=40):
    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"ct": rng.choice(["a", "b"], n), "donor_id": [f"d{i % 4}" for i in range(n)],
                        "t": np.repeat([0.0, 1.0, 2.0, 3.0], n // 4)}, index=[f"c{i}" for i in range(n)])
    raw = ad.AnnData(X=sp.csr_matrix(rng.poisson(3.0, (n, 3)).astype(np.float32)), obs=obs,
                     var=pd.DataFrame(index=["g0", "g1", "g2"]))
    raw.obsm["X_true"] = rng.standard_normal((n, 2))
    return raw


def test_keep_obsm_carries_the_true_state_and_true_state_control_returns_it(tmp_path):
    raw = _raw()
    raw.write_h5ad(tmp_path / "raw.h5ad")
    cfg = PreprocessConfig(columns={"cell_type": "ct", "donor": "donor_id", "time": "t"}, dataset="toy",
                           keep_obsm=("X_true",), needs_split=False)
    preprocess(tmp_path / "raw.h5ad", GeneSpace(["g0", "g1", "g2"], ["A", "B", "C"]), tmp_path / "p.h5ad", cfg,
               progress=False)
    data = read_h5ad(tmp_path / "p.h5ad")
    np.testing.assert_allclose(data.obsm["X_true"], raw.obsm["X_true"].astype(np.float32))
    ctl = Control(kind="true_state")
    assert ctl.role == "positive"
    np.testing.assert_array_equal(ctl.fit_transform(data), data.obsm["X_true"])
    # off by default: nothing is kept, and the control says what it needs
    cfg0 = PreprocessConfig(columns=cfg.columns, dataset="toy", needs_split=False)
    preprocess(tmp_path / "raw.h5ad", GeneSpace(["g0", "g1", "g2"], ["A", "B", "C"]), tmp_path / "q.h5ad", cfg0,
               progress=False)
    plain = read_h5ad(tmp_path / "q.h5ad")
    assert "X_true" not in plain.obsm
    with pytest.raises(InputError, match="keep_obsm"):
        ctl.fit_transform(plain)
    bad = PreprocessConfig(columns=cfg.columns, dataset="toy", keep_obsm=("X_umap",), needs_split=False)
    with pytest.raises(InputError, match="X_umap"):
        preprocess(tmp_path / "raw.h5ad", GeneSpace(["g0", "g1", "g2"], ["A", "B", "C"]), tmp_path / "r.h5ad", bad,
                   progress=False)
