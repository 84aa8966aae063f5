"""scVI and Harmony baselines (scjepa.methods.scvi, scjepa.methods.harmony, scjepa.methods.per_dataset).

Tiny data (600 cells x 200 genes, 3 batches, 3 cell types; negative-binomial counts with per-batch gene
multipliers) and a few scVI epochs, so the module runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scjepa.errors import InputError
from scjepa.methods.harmony import HarmonyMethod, pca
from scjepa.methods.per_dataset import embed_dataset, make_method
from scjepa.methods.scvi import SCVIMethod, check_counts_layer

# small, fast scVI settings for the tests (the defaults are for real runs)
FAST_SCVI = dict(max_epochs=3, n_layers=1, n_hidden=32, batch_size=128, progress_bar=False)


def make_processed(n_cells=600, n_genes=200, n_batches=3, n_types=3, batch_shift=1.5, seed=0):
    """A processed-like AnnData: X = log1p(normalise_total 1e4) CSR float32, layers['counts'] raw."""
    rng = np.random.default_rng(seed)
    batch = rng.integers(0, n_batches, n_cells)
    ctype = rng.integers(0, n_types, n_cells)
    base = rng.gamma(2.0, 1.0, n_genes)
    type_mult = np.exp(rng.normal(0.0, 1.0, (n_types, n_genes)))
    batch_mult = np.exp(rng.normal(0.0, batch_shift / 3.0, (n_batches, n_genes)))
    mu = base * type_mult[ctype] * batch_mult[batch] * rng.lognormal(0.0, 0.2, n_cells)[:, None]
    r = 5.0
    counts = rng.negative_binomial(r, r / (r + mu)).astype(np.float32)
    lib = counts.sum(1, keepdims=True)
    lib[lib == 0] = 1.0
    X = np.log1p(counts / lib * 1e4).astype(np.float32)
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical([f"b{i}" for i in batch]),
            "cell_type": pd.Categorical([f"t{i}" for i in ctype]),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    adata.layers["counts"] = sp.csr_matrix(counts)
    return adata


def knn_accuracy(Z, labels, k=15):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return float(cross_val_score(KNeighborsClassifier(k), Z, labels, cv=3).mean())


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One torch thread: on a shared 2-core runner the default oversubscribes and is several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def adata():
    return make_processed()


@pytest.fixture(scope="module")
def scvi_fit(adata):
    """Two scVI fits with the same seed (and the first fitted object)."""
    m1 = SCVIMethod(seed=3, **FAST_SCVI)
    z1 = m1.fit_transform(adata)
    z2 = SCVIMethod(seed=3, **FAST_SCVI).fit_transform(adata)
    return m1, z1, z2


# ---------------------------------------------------------------------------------------------- Harmony


def test_harmony_shape_dtype_finite_and_deterministic(adata):
    z = HarmonyMethod(seed=0).fit_transform(adata)
    assert z.shape == (adata.n_obs, 50)
    assert z.dtype == np.float32
    assert np.isfinite(z).all()
    z2 = HarmonyMethod(seed=0).fit_transform(adata)
    np.testing.assert_allclose(z, z2, rtol=1e-5, atol=1e-5)


def test_harmony_reduces_batch_separability(adata):
    b = adata.obs["batch"].cat.codes.to_numpy()
    t = adata.obs["cell_type"].cat.codes.to_numpy()
    pcs = pca(adata.X, 50).astype(np.float32)
    z = HarmonyMethod(seed=0).fit_transform(adata)
    acc_pca, acc_harmony = knn_accuracy(pcs, b), knn_accuracy(z, b)
    # strong batch effect: uncorrected PCs predict the batch almost perfectly; Harmony mixes batches
    assert acc_pca > 0.9
    assert acc_harmony < acc_pca - 0.3, (acc_pca, acc_harmony)
    # while cell types stay separable
    assert knn_accuracy(z, t) > 0.9


def test_harmony_clamps_n_pcs_on_tiny_data():
    small = make_processed(n_cells=40, n_genes=30)
    z = HarmonyMethod(n_pcs=50).fit_transform(small)
    assert z.shape == (40, 29)


def test_harmony_single_batch_returns_pcs(adata):
    one = adata.copy()
    one.obs["batch"] = pd.Categorical(["b0"] * one.n_obs)
    z = HarmonyMethod(n_pcs=10).fit_transform(one)
    assert z.shape == (one.n_obs, 10) and np.isfinite(z).all()


def test_harmony_missing_batch_column(adata):
    bad = adata.copy()
    del bad.obs["batch"]
    with pytest.raises(InputError, match="'batch'"):
        HarmonyMethod().fit_transform(bad)


# ---------------------------------------------------------------------------------------------- scVI


def test_scvi_shape_dtype_finite(scvi_fit, adata):
    _, z1, _ = scvi_fit
    assert z1.shape == (adata.n_obs, 64)
    assert z1.dtype == np.float32
    assert np.isfinite(z1).all()
    assert z1.std(axis=0).max() > 0  # not collapsed to a constant


def test_scvi_same_seed_same_embedding(scvi_fit):
    _, z1, z2 = scvi_fit
    np.testing.assert_allclose(z1, z2, rtol=1e-4, atol=1e-5)


def test_scvi_kl_weight_reaches_one(scvi_fit):
    m, _, _ = scvi_fit
    assert m.kl_warmup_epochs == 1  # default max_epochs // 2
    kl = m.model_.history["kl_weight"]["kl_weight"].dropna()
    assert float(kl.iloc[-1]) == pytest.approx(1.0)


def test_scvi_kl_warmup_must_end_before_training():
    with pytest.raises(InputError, match="n_epochs_kl_warmup"):
        SCVIMethod(max_epochs=10, n_epochs_kl_warmup=400)
    with pytest.raises(InputError, match="n_epochs_kl_warmup"):
        SCVIMethod(max_epochs=10, n_epochs_kl_warmup=10)
    assert SCVIMethod(max_epochs=10, n_epochs_kl_warmup=9).kl_warmup_epochs == 9
    assert SCVIMethod(max_epochs=50).kl_warmup_epochs == 25


def test_scvi_save_load_roundtrip(scvi_fit, adata, tmp_path):
    m, z1, _ = scvi_fit
    out = tmp_path / "scvi_model"
    m.save(out)
    assert {"model.pt", "hparams.json", "genes.txt", "curve.csv"} <= {p.name for p in out.iterdir()}
    hp = json.loads((out / "hparams.json").read_text())
    assert hp["family"] == "scvi" and hp["n_latent"] == 64 and hp["max_epochs"] == 3
    assert hp["n_genes"] == adata.n_vars and hp["gene_ids_file"] == "genes.txt"
    assert (out / "genes.txt").read_text().split() == list(adata.var_names)
    with pytest.raises(InputError, match="needs the AnnData"):
        SCVIMethod.load(out)
    loaded = SCVIMethod.load(out, adata)
    np.testing.assert_allclose(loaded.transform(adata), z1, rtol=1e-5, atol=1e-5)
    # transform does not embed unseen batches
    new = adata[:50].copy()
    new.obs["batch"] = pd.Categorical(["unseen"] * 50)
    with pytest.raises(InputError, match="not seen in training"):
        loaded.transform(new)


# ---------------------------------------------------------------------------------------------- input checks


def test_missing_counts_layer_names_file_and_layer(adata, tmp_path):
    bad = adata.copy()
    del bad.layers["counts"]
    src = tmp_path / "nocounts.h5ad"
    bad.write_h5ad(src)
    out = tmp_path / "emb.h5ad"
    with pytest.raises(InputError) as ei:
        embed_dataset("scvi", FAST_SCVI, src, out)
    assert "nocounts.h5ad" in str(ei.value) and "counts" in str(ei.value)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["fractional", "negative", "nan"])
def test_non_count_values_rejected(adata, tmp_path, kind):
    bad = adata.copy()
    C = bad.layers["counts"].copy()
    C.data[5] = {"fractional": 2.5, "negative": -1.0, "nan": np.nan}[kind]
    bad.layers["counts"] = C
    src = tmp_path / f"{kind}.h5ad"
    bad.write_h5ad(src)
    out = tmp_path / "emb.h5ad"
    with pytest.raises(InputError) as ei:
        embed_dataset("scvi", FAST_SCVI, src, out)
    assert f"{kind}.h5ad" in str(ei.value) and "'counts'" in str(ei.value)
    assert not out.exists()


def test_log_normalised_layer_is_not_counts(adata):
    bad = adata.copy()
    bad.layers["counts"] = bad.X.copy()
    with pytest.raises(InputError, match="non-integer"):
        check_counts_layer(bad)


@pytest.mark.parametrize("family", ["scvi", "harmony"])
def test_missing_batch_column_names_column(adata, tmp_path, family):
    bad = adata.copy()
    bad.obs = bad.obs.rename(columns={"batch": "sample"})
    src = tmp_path / "nobatch.h5ad"
    bad.write_h5ad(src)
    out = tmp_path / "emb.h5ad"
    with pytest.raises(InputError) as ei:
        embed_dataset(family, FAST_SCVI if family == "scvi" else {}, src, out)
    assert "'batch'" in str(ei.value) and "nobatch.h5ad" in str(ei.value)
    assert not out.exists()


def test_unknown_hparam_and_family_rejected():
    with pytest.raises(InputError, match="n_latnet"):
        make_method("scvi", {"n_latnet": 10})
    with pytest.raises(InputError, match="family"):
        make_method("bbknn", {})
    # metadata keys of hparams.json are accepted and ignored
    m = make_method("harmony", {"family": "harmony", "method": "harmony", "n_pcs": 20}, seed=4)
    assert m.n_pcs == 20 and m.seed == 4


# ---------------------------------------------------------------------------------------------- workflow entry


def test_embed_dataset_harmony_writes_contract(adata, tmp_path):
    src = tmp_path / "processed.h5ad"
    adata.write_h5ad(src)
    out = tmp_path / "emb" / "harmony.h5ad"
    embed_dataset("harmony", {"method": "harmony", "n_pcs": 20}, src, out, model_dir=tmp_path / "m", seed=0)
    emb = ad.read_h5ad(out)
    assert list(emb.obs_names) == list(adata.obs_names)
    pd.testing.assert_frame_equal(emb.obs, adata.obs)
    assert emb.obsm["X_emb"].dtype == np.float32 and emb.obsm["X_emb"].shape == (adata.n_obs, 20)
    assert np.isfinite(emb.obsm["X_emb"]).all()
    assert emb.uns["method"] == "harmony"
    assert json.loads(emb.uns["method_config"])["n_pcs"] == 20
    assert json.loads((tmp_path / "m" / "hparams.json").read_text())["family"] == "harmony"
    again = HarmonyMethod.load(tmp_path / "m", adata)
    assert again.n_pcs == 20
    np.testing.assert_allclose(again.embedding_, emb.obsm["X_emb"], rtol=1e-5, atol=1e-5)


def test_embed_dataset_scvi_writes_contract(adata, tmp_path):
    src = tmp_path / "processed.h5ad"
    adata.write_h5ad(src)
    out = tmp_path / "scvi.h5ad"
    z = embed_dataset("scvi", {**FAST_SCVI, "n_latent": 16}, src, out, model_dir=tmp_path / "model", seed=1)
    emb = ad.read_h5ad(out)
    assert list(emb.obs_names) == list(adata.obs_names)
    assert emb.obsm["X_emb"].dtype == np.float32 and emb.obsm["X_emb"].shape == (adata.n_obs, 16)
    np.testing.assert_array_equal(emb.obsm["X_emb"], z)
    assert emb.uns["method"] == "scvi"
    assert json.loads(emb.uns["method_config"])["seed"] == 1
    assert (tmp_path / "model" / "model.pt").exists()
