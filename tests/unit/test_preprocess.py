"""Preprocessing against a hand computation; splits; gene alignment; bad inputs."""

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scjepa.data.genes import GeneSpace
from scjepa.data.preprocess import PreprocessConfig, preprocess
from scjepa.data.splits import donor_split
from scjepa.errors import InputError
from scjepa.io import read_h5ad


def make_raw(n=60, genes=("g0", "g1", "g2", "g3"), donors=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.poisson(3.0, size=(n, len(genes))).astype(np.float32)
    obs = pd.DataFrame(
        {
            "ct": rng.choice(["T", "B", "NK"], size=n),
            "donor_id": [f"d{i % donors}" for i in range(n)],
            "study": rng.choice(["s1", "s2"], size=n),
        },
        index=[f"c{i}" for i in range(n)],
    )
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=list(genes)))


def cfg(**kw):
    base = dict(columns={"cell_type": "ct", "donor": "donor_id", "batch": "study"}, chunk_size=7, dataset="toy")
    base.update(kw)
    return PreprocessConfig(**base)


SPACE = GeneSpace(["g0", "g1", "g2", "g3", "g4"], ["A", "B", "C", "D", "E"])


def run(tmp_path, raw, **kw):
    raw_path = tmp_path / "raw.h5ad"
    raw.write_h5ad(raw_path)
    out = tmp_path / "processed.h5ad"
    prov = preprocess(raw_path, SPACE, out, cfg(**kw), progress=False)
    return out, prov


def test_normalise_log1p_matches_hand_computation(tmp_path):
    raw = make_raw()
    out, prov = run(tmp_path, raw)
    p = read_h5ad(out)
    counts = raw.X.toarray()
    expected = np.zeros((raw.n_obs, 5))
    expected[:, :4] = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(p.X.toarray(), expected, rtol=1e-5)
    assert sp.issparse(p.X) and p.X.dtype == np.float32
    np.testing.assert_array_equal(p.layers["counts"].toarray()[:, :4], counts)
    assert list(p.var_names) == list(SPACE.ids)
    assert p.var["present"].tolist() == [True, True, True, True, False]
    assert prov["gene_coverage"] == pytest.approx(0.8)
    assert p.uns["provenance"]["gene_coverage"] == pytest.approx(0.8)
    assert set(p.obs.columns) >= {"cell_type", "batch", "donor", "split"}
    assert list(p.obs_names) == list(raw.obs_names)


def test_gene_alignment_reorders_and_zero_fills(tmp_path):
    raw = make_raw(genes=("g3", "g0", "gX", "g2"))
    out, prov = run(tmp_path, raw, min_coverage=0.5)
    p = read_h5ad(out)
    c = raw.X.toarray()
    np.testing.assert_array_equal(p.layers["counts"].toarray(), np.stack([c[:, 1], 0 * c[:, 0], c[:, 3], c[:, 0], 0 * c[:, 0]], 1))
    assert prov["n_genes_matched"] == 3


def test_symbols_where_ids_expected_are_mapped(tmp_path):
    raw = make_raw(genes=("A", "B", "C", "D"))
    out, prov = run(tmp_path, raw)
    assert prov["matched_by"] == "symbol" and prov["n_genes_matched"] == 4


def test_donor_split_is_disjoint_and_close_to_fractions():
    rng = np.random.default_rng(1)
    donors = rng.choice([f"d{i}" for i in range(40)], size=5000)
    split = donor_split(donors, seed=3)
    df = pd.DataFrame({"d": donors, "s": split})
    assert (df.groupby("d")["s"].nunique() == 1).all()
    frac = df["s"].value_counts(normalize=True)
    assert abs(frac["train"] - 0.7) < 0.05 and abs(frac["val"] - 0.15) < 0.05
    assert not np.array_equal(split, donor_split(donors, seed=4))
    np.testing.assert_array_equal(split, donor_split(donors, seed=3))


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda a: a.X.data.__setitem__(0, 1.5), "non-integer"),
        (lambda a: a.X.data.__setitem__(0, np.nan), "NaN"),
        (lambda a: a.X.data.__setitem__(0, np.inf), "NaN or inf"),
        (lambda a: a.X.data.__setitem__(0, -2), "negative"),
    ],
)
def test_bad_values_name_file_and_column(tmp_path, mutate, needle):
    raw = make_raw()
    mutate(raw)
    with pytest.raises(InputError, match=needle) as e:
        run(tmp_path, raw)
    assert "raw.h5ad" in str(e.value) and "column 'X'" in str(e.value)
    assert not (tmp_path / "processed.h5ad").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["raw.h5ad"]  # nothing half-written


def test_duplicate_cell_and_gene_ids(tmp_path):
    raw = make_raw()
    raw.obs_names = ["c0"] * raw.n_obs
    with pytest.raises(InputError, match="duplicate cell ids"):
        run(tmp_path, raw)
    raw = make_raw()
    raw.var_names = ["g0", "g0", "g1", "g2"]
    with pytest.raises(InputError, match="duplicate gene ids"):
        run(tmp_path, raw)


def test_missing_columns_and_missing_labels(tmp_path):
    raw = make_raw()
    with pytest.raises(InputError, match="column 'celltype'"):
        run(tmp_path, raw, columns={"cell_type": "celltype", "donor": "donor_id"})
    raw.obs.loc["c3", "ct"] = np.nan
    with pytest.raises(InputError, match="missing value"):
        run(tmp_path, raw)


def test_no_gene_overlap_and_low_coverage(tmp_path):
    with pytest.raises(InputError, match="match the corpus gene space"):
        run(tmp_path, make_raw(genes=("x1", "x2", "x3", "x4")))
    with pytest.raises(InputError, match="coverage"):
        run(tmp_path, make_raw(genes=("g0", "x2", "x3", "x4")))


def test_single_donor_and_empty_and_corrupt(tmp_path):
    with pytest.raises(InputError, match="donor"):
        run(tmp_path, make_raw(donors=1))
    with pytest.raises(InputError, match="no cells"):
        run(tmp_path, make_raw()[:0].copy())
    bad = tmp_path / "raw.h5ad"
    make_raw().write_h5ad(bad)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        preprocess(bad, SPACE, tmp_path / "out.h5ad", cfg(), progress=False)
    assert not (tmp_path / "out.h5ad").exists()


def test_log1p_input_kind_is_kept_without_counts(tmp_path):
    raw = make_raw()
    raw.X = sp.csr_matrix(np.log1p(raw.X.toarray()))
    out, prov = run(tmp_path, raw, x_kind="log1p_normalized")
    p = read_h5ad(out)
    assert "counts" not in p.layers
    np.testing.assert_allclose(p.X.toarray()[:, :4], raw.X.toarray(), rtol=1e-6)


def test_memory_is_bounded_by_chunks(tmp_path, monkeypatch):
    """Each chunk handed to the normaliser has at most chunk_size rows."""
    import scjepa.data.preprocess as pp

    sizes = []
    orig = pp.normalise_log1p
    monkeypatch.setattr(pp, "normalise_log1p", lambda b, t: sizes.append(b.shape[0]) or orig(b, t))
    run(tmp_path, make_raw(n=50), chunk_size=8)
    assert max(sizes) <= 8 and sum(sizes) == 50


def test_counts_from_raw_X(tmp_path):
    """CELLxGENE h5ads keep normalised X and the counts in raw.X."""
    raw = make_raw()
    counts = raw.X.copy()
    raw.raw = raw.copy()
    raw.X = sp.csr_matrix(np.log1p(counts.toarray()))
    out, prov = run(tmp_path, raw, matrix="raw.X")
    p = read_h5ad(out)
    np.testing.assert_array_equal(p.layers["counts"].toarray()[:, :4], counts.toarray())
    with pytest.raises(InputError, match="non-integer"):
        run(tmp_path, raw, matrix="X")


@pytest.mark.parametrize("std", ["batch", "time", "donor"])
def test_missing_batch_time_or_donor_column_is_named(tmp_path, std):
    cols = {"cell_type": "ct", "donor": "donor_id", "batch": "study", std: f"{std}_typo"}
    with pytest.raises(InputError, match=f"column '{std}_typo'") as e:
        run(tmp_path, make_raw(), columns=cols)
    assert "raw.h5ad" in str(e.value) and not (tmp_path / "processed.h5ad").exists()


def test_a_role_without_its_column_names_the_config_key(tmp_path):
    with pytest.raises(InputError, match="datasets.toy.columns.time"):
        run(tmp_path, make_raw(), required=("cell_type", "time"))


def test_non_numeric_time_is_named(tmp_path):
    raw = make_raw()
    raw.obs["day"] = "day one"
    with pytest.raises(InputError, match="must be numeric") as e:
        run(tmp_path, raw, columns={"cell_type": "ct", "donor": "donor_id", "time": "day"})
    assert "column 'day'" in str(e.value)
