"""Derived obs columns (scjepa.data.derive) and the preprocessing options the real bridge datasets use:
``derive``, ``x_kind: normalized`` and ``gene_symbol_case: upper``."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scjepa.data.derive import clone_majority, derive_columns
from scjepa.data.genes import GeneSpace
from scjepa.data.preprocess import PreprocessConfig, preprocess
from scjepa.errors import InputError


def _larry_like():
    # clone 0: day-6 cells Neu, Neu, Mono -> Neu; clone 1: Mono (one day-6 cell); clone 2: no day-6 cell
    # clone 3: tie Ery / Mk -> Ery (sorts first)
    time = ["2", "4", "6", "6", "6", "2", "6", "4", "6", "6", "6", "2"]
    state = ["undiff", "undiff", "Neutrophil", "Neutrophil", "Monocyte", "undiff", "Monocyte", "undiff",
             "Erythroid", "Megakaryocyte", "Baso", "undiff"]
    clone = [0, 0, 0, 0, 0, 1, 1, 2, 3, 3, None, None]  # cell 10: day 6 in no clone; cell 11: none
    M = np.zeros((12, 4))
    for i, c in enumerate(clone):
        if c is not None:
            M[i, c] = 1
    obs = pd.DataFrame({"time_info": pd.Categorical(time), "state_info": pd.Categorical(state)},
                       index=[f"c{i}" for i in range(12)])
    return obs, {"X_clone": sp.csr_matrix(M)}


SPEC = {"kind": "clone_majority", "clones": "X_clone", "label": "state_info", "time": "time_info", "at": 6}


def test_clone_majority_fates():
    obs, obsm = _larry_like()
    fate = clone_majority(obs, obsm, SPEC)
    assert isinstance(fate.dtype, pd.CategoricalDtype)
    got = [None if pd.isna(v) else v for v in fate]
    assert got == ["Neutrophil"] * 5 + ["Monocyte"] * 2 + [None] + ["Erythroid"] * 2 + ["Baso", None]


def test_clone_majority_dense_and_multi_clone_cells():
    obs, obsm = _larry_like()
    M = obsm["X_clone"].toarray()
    M[1, 1] = 1  # cell 1 (day 4) in clones 0 and 1: ambiguous -> no fate
    fate = clone_majority(obs, {"X_clone": M}, SPEC)
    assert pd.isna(fate.iloc[1]) and fate.iloc[0] == "Neutrophil"


@pytest.mark.parametrize("change,pattern", [
    ({"clones": "X_missing"}, "obsm 'X_missing'"),
    ({"label": "state"}, "column 'state'"),
    ({"at": 8}, "no cell has time_info == '8'"),
])
def test_clone_majority_errors_name_what_is_missing(change, pattern, tmp_path):
    obs, obsm = _larry_like()
    with pytest.raises(InputError, match=pattern) as err:
        derive_columns(obs, obsm, {"fate": {**SPEC, **change}}, path=tmp_path / "larry.h5ad", dataset="larry")
    assert "larry.h5ad" in str(err.value) and "datasets.larry.derive.fate" in str(err.value)


def test_map_derivation_and_unlisted_labels():
    obs = pd.DataFrame({"sample": pd.Categorical(["T0_1A", "T2_3B", "T8_9E"])})
    out = derive_columns(obs, {}, {"t": {"kind": "map", "from": "sample",
                                         "values": {"T0_1A": 0, "T2_3B": 1, "T8_9E": 4}}})
    assert out["t"].tolist() == [0.0, 1.0, 4.0] and "t" not in obs
    with pytest.raises(InputError, match=r"without a value.*T8_9E"):
        derive_columns(obs, {}, {"t": {"kind": "map", "from": "sample", "values": {"T0_1A": 0, "T2_3B": 1}}})
    with pytest.raises(InputError, match="already has an obs column"):
        derive_columns(obs, {}, {"sample": {"kind": "map", "from": "sample", "values": {"x": 1}}})
    with pytest.raises(InputError, match="needs kind"):
        derive_columns(obs, {}, {"t": {"from": "sample"}})


def _space(symbols):
    return GeneSpace(pd.Index([f"ENSG{i:011d}" for i in range(len(symbols))]), pd.Index(symbols))


def test_preprocess_derives_keeps_and_maps(tmp_path):
    obs, obsm = _larry_like()
    symbols = [f"GENE{i}" for i in range(10)]
    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, (12, 10)).astype(np.float32) + 1
    X = X / X.sum(1, keepdims=True) * 1000  # library-size normalised, not logged (as CoSpar's LARRY file)
    a = ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"Gene{i}" for i in range(10)]),
                   obsm=obsm)
    raw = tmp_path / "raw.h5ad"
    a.write_h5ad(raw)
    cfg = PreprocessConfig(x_kind="normalized", columns={"time": "time_info"}, required=("time",),
                           keep_columns=("fate", "state_info"), derive={"fate": SPEC}, gene_symbol_case="upper",
                           dataset="larry", needs_split=False, chunk_size=5)
    prov = preprocess(raw, _space(symbols), tmp_path / "out.h5ad", cfg, progress=False)
    assert prov["n_genes_matched"] == 10 and prov["matched_by"] == "symbol"
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.obs["time"].tolist() == [2, 4, 6, 6, 6, 2, 6, 4, 6, 6, 6, 2]
    assert out.obs["fate"].iloc[0] == "Neutrophil" and pd.isna(out.obs["fate"].iloc[7])
    assert "counts" not in out.layers
    np.testing.assert_allclose(np.expm1(out.X.toarray()).sum(1), 1e4, rtol=1e-4)  # rescaled, then log1p
    # declared as counts, the same file is refused (never normalised data taken as counts)
    cfg.x_kind = "counts"
    with pytest.raises(InputError, match="non-integer"):
        preprocess(raw, _space(symbols), tmp_path / "out2.h5ad", cfg, progress=False)
    # without the case option, mouse-style names do not match
    cfg.x_kind, cfg.gene_symbol_case = "normalized", None
    with pytest.raises(InputError, match="match"):
        preprocess(raw, _space(symbols), tmp_path / "out3.h5ad", cfg, progress=False)
