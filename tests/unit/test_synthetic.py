"""The embedded corpus generator: determinism, statistics against their definitions, every kind.

Small worlds (a few thousand cells x 500 genes) keep the file fast; statistics that depend on the
gene space (sparsity) use the default 2000 genes.
"""

from __future__ import annotations

import json
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from scjepa.data import synthetic as S

N_GENES = 500
N_CELLS = 3000


def log1p_norm(X) -> np.ndarray:
    X = sp.csr_matrix(X, dtype=np.float64)
    lib = np.maximum(np.asarray(X.sum(axis=1)).ravel(), 1.0)
    L = sp.diags(1e4 / lib) @ X
    L = sp.csr_matrix(L)
    L.data = np.log1p(L.data)
    return L.toarray()


@pytest.fixture(scope="module")
def pretrain():
    return S.generate("pretrain", N_CELLS, n_genes=N_GENES, seed=0)


@pytest.fixture(scope="module")
def pretrain_pcs(pretrain):
    return PCA(30, random_state=0).fit_transform(log1p_norm(pretrain.X))


@pytest.fixture(scope="module")
def small_kinds():
    return {k: S.generate(k, 600, n_genes=N_GENES, seed=5) for k in S.KINDS}


# ---- world and determinism ------------------------------------------------------------------


def test_world_is_deterministic_with_ensembl_like_ids():
    a, b = S.World(N_GENES, 16, seed=0), S.World(N_GENES, 16, seed=0)
    assert a.gene_ids == b.gene_ids and a.gene_symbols == b.gene_symbols and a.cell_types == b.cell_types
    np.testing.assert_array_equal(a.programs, b.programs)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert all(re.fullmatch(r"ENSG9\d{10}", g) for g in a.gene_ids)
    assert len(set(a.gene_ids)) == N_GENES and len(set(a.gene_symbols)) == N_GENES
    assert not set(a.gene_ids) & set(a.gene_symbols)  # symbols and ids are different namespaces
    assert len(set(a.cell_types)) == 16 and all("/" in t for t in a.cell_types)
    assert "T cell/CD4 naive" in a.cell_types
    c = S.World(N_GENES, 16, seed=1)
    assert not np.allclose(a.programs, c.programs)


def test_generate_is_deterministic_by_seed():
    a = S.generate("pretrain", 1500, n_genes=300, seed=0)
    b = S.generate("pretrain", 1500, n_genes=300, seed=0)
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.obsm["X_true"], b.obsm["X_true"])
    c = S.generate("pretrain", 1500, n_genes=300, seed=1)
    assert (a.X != c.X).nnz > 0
    assert not set(a.obs["donor"]) & set(c.obs["donor"])  # new seed, new donors
    assert list(a.var_names) == list(c.var_names)  # same world


def test_world_is_shared_across_kinds(small_kinds):
    pre, ind = small_kinds["pretrain"], small_kinds["in_distribution"]
    world = S.World(N_GENES, 16, seed=0)
    for kind, adata in small_kinds.items():
        if kind != "spatial":
            assert list(adata.var_names) == world.gene_ids, kind
        assert set(adata.var_names) <= set(world.gene_ids)
    # in-distribution: the pretraining studies and technologies, new donors
    assert set(ind.obs["batch"].cat.categories) == set(pre.obs["batch"].cat.categories)
    assert not set(ind.obs["donor"]) & set(pre.obs["donor"])
    assert set(ind.obs["cell_type"]) <= set(world.cell_types)


def test_prefix_consistency_and_chunks_equal_generate():
    full = S.generate("timecourse", 2500, n_genes=300, seed=3)
    head = S.generate("timecourse", 1000, n_genes=300, seed=3)
    assert (full.X[:1000] != head.X).nnz == 0
    chunks = list(S.generate_chunks("timecourse", 2500, chunk_size=700, n_genes=300, seed=3))
    assert [c.n_obs for c in chunks] == [700, 700, 700, 400]
    cat = ad.concat(chunks, merge="same")
    assert (cat.X != full.X).nnz == 0
    assert list(cat.obs_names) == list(full.obs_names)
    np.testing.assert_array_equal(cat.obsm["X_true"], full.obsm["X_true"])
    for col in full.obs.columns:
        np.testing.assert_array_equal(cat.obs[col].astype(str), full.obs[col].astype(str), err_msg=col)


def test_chunked_writer_equals_generate(tmp_path):
    path = tmp_path / "raw.h5ad"
    S.write_h5ad_chunked(path, "spatial", 2200, 900, n_genes=N_GENES, seed=2)
    back = ad.read_h5ad(path)
    full = S.generate("spatial", 2200, n_genes=N_GENES, seed=2)
    assert sp.issparse(back.X) and back.X.dtype == np.float32
    assert (back.X != full.X).nnz == 0
    pd.testing.assert_frame_equal(back.obs, full.obs)
    pd.testing.assert_frame_equal(back.var, full.var)
    np.testing.assert_array_equal(back.obsm["X_true"], full.obsm["X_true"])
    assert back.uns["synthetic"]["n_cells"] == 2200 and "chunk" not in back.uns["synthetic"]
    assert not list(tmp_path.glob(".*tmp*"))  # atomic: no temporary left


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        S.generate("bogus", 10)
    with pytest.raises(TypeError, match="n_perturbation\\b"):
        S.generate("perturbation", 10, n_genes=50, n_perturbation=3)
    # the workflow config passes extra generator options as one mapping
    a = S.generate("perturbation", 50, n_genes=50, options={"n_perturbations": 3})
    assert list(a.obs["condition"].cat.categories) == ["control", "pert_A", "pert_B", "pert_C"]


# ---- contract of every kind ------------------------------------------------------------------


@pytest.mark.parametrize("kind", S.KINDS)
def test_every_kind_has_the_contract(small_kinds, kind, tmp_path):
    a = small_kinds[kind]
    assert sp.isspmatrix_csr(a.X) and a.X.dtype == np.float32
    assert a.X.data.min() > 0 and np.all(a.X.data == np.round(a.X.data))
    assert a.var_names.is_unique and a.obs_names.is_unique
    assert a.obs_names[0] == f"{kind}_5_cell0"
    assert "gene_symbol" in a.var
    for col in ("cell_type", "donor", "batch", "study"):
        assert isinstance(a.obs[col].dtype, pd.CategoricalDtype), col
    assert a.obs["donor"].nunique() >= 10  # a 70/15/15 split by donor is possible
    Z = a.obsm["X_true"]
    assert Z.dtype == np.float32 and Z.shape[0] == a.n_obs and np.isfinite(Z).all()
    syn = a.uns["synthetic"]
    assert syn["kind"] == kind and syn["seed"] == 5 and syn["n_cells"] == 600
    json.dumps(syn)  # JSON-serialisable
    extra = {
        "timecourse": ["time", "fate", "lineage_progress"],
        "spatial": ["x", "y", "layer"],
        "perturbation": ["condition"],
        "out_of_distribution": ["is_novel_type"],
    }.get(kind, [])
    for col in extra:
        assert col in a.obs, col
    a.write_h5ad(tmp_path / "x.h5ad")  # obs and uns survive h5ad (no "/" in keys, no None)
    back = ad.read_h5ad(tmp_path / "x.h5ad")
    assert back.shape == a.shape
    assert _plain(dict(back.uns)) == _plain(dict(a.uns))


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x


# ---- statistics ------------------------------------------------------------------------------


def test_negative_binomial_mean_variance(pretrain):
    obs = pretrain.obs
    ct = obs["cell_type"].value_counts().index[0]
    st = obs["study"].cat.categories[0]
    m = ((obs["cell_type"] == ct) & (obs["study"] == st)).to_numpy()
    # a homogeneous group, scaled to a common depth so library size does not dominate
    X = pretrain.X[m].toarray().astype(float)
    mean, var = X.mean(axis=0), X.var(axis=0, ddof=1)
    ok = mean > 0.2
    assert ok.sum() > 50
    assert (var[ok] > mean[ok]).mean() > 0.95  # over-dispersed, not Poisson
    # NB: var = mu + mu^2 / theta, so the excess over Poisson grows with the mean
    assert spearmanr(mean[ok], var[ok] / mean[ok]).correlation > 0.6


def test_sampler_matches_negative_binomial_moments():
    rng = np.random.default_rng(0)
    for mu, theta in [(0.05, 0.5), (0.8, 0.3), (1.5, 4.0), (3.0, 0.4), (40.0, 4.0)]:
        X = S.sample_nb(rng, np.full((40_000, 5), mu, np.float32), np.full(5, theta, np.float32)).toarray()
        assert X.mean() == pytest.approx(mu, rel=0.03)
        assert X.var() == pytest.approx(mu + mu**2 / theta, rel=0.1)
        assert (X == 0).mean() == pytest.approx((theta / (theta + mu)) ** theta, abs=0.01)


def test_sparsity_and_library_size_are_realistic():
    a = S.generate("pretrain", 1500, seed=0)  # default 2000 genes
    zeros = 1 - a.X.nnz / np.prod(a.shape)
    assert 0.8 <= zeros <= 0.95
    lib = np.asarray(a.X.sum(axis=1)).ravel()
    # after saturation of the few very highly expressed genes and dropout: a 10x v2 / Drop-seq-like depth
    assert 400 <= np.median(lib) <= 5000
    # log-normal library sizes: log lib roughly symmetric with sd ~0.4-0.8 (capture differs by study)
    assert 0.3 < np.std(np.log(lib)) < 1.0


def test_types_are_many_and_imbalanced(pretrain):
    freq = pretrain.obs["cell_type"].value_counts(normalize=True)
    assert (freq > 0).sum() >= 15
    assert 0.003 <= freq[freq > 0].min() <= 0.02  # rare types, around 1 %
    assert freq.max() / freq[freq > 0].min() > 5


def test_types_are_separable_but_siblings_are_not_trivial(pretrain, pretrain_pcs):
    y = pretrain.obs["cell_type"].cat.codes.to_numpy()
    pred = cross_val_predict(KNeighborsClassifier(15), pretrain_pcs, y, cv=5)
    acc = (pred == y).mean()
    chance = np.bincount(y).max() / len(y)
    assert acc > 0.8 and acc > 3 * chance
    recall = pd.Series(pred == y).groupby(y).mean()
    assert recall.min() < 0.9  # some (sibling / rare) types are hard
    # the confusions stay within lineages: sibling types are the close ones
    lin = pretrain.obs["lineage"].cat.codes.to_numpy()
    lin_of_type = pd.Series(lin).groupby(y).first()
    wrong = pred != y
    assert (lin_of_type[pred[wrong]].to_numpy() == lin[wrong]).mean() > 0.5
    # the true latent state separates the types (it is the truth the counts are drawn from)
    Z = pretrain.obsm["X_true"]
    assert (cross_val_predict(KNeighborsClassifier(15), Z, y, cv=5) == y).mean() > 0.97


def _study_accuracy(P, s):
    # a linear classifier: per-study centering removes exactly what it can use
    return cross_val_score(LinearDiscriminantAnalysis(), P, s, cv=5).mean()


def test_batch_effect_present_and_removable(pretrain):
    obs = pretrain.obs
    ct = obs["cell_type"].value_counts().index[0]
    m = (obs["cell_type"] == ct).to_numpy()
    s = obs["study"].cat.codes.to_numpy()[m]
    assert len(np.unique(s)) >= 3
    P = PCA(20, random_state=0).fit_transform(log1p_norm(pretrain.X[m]))
    chance = np.bincount(s).max() / len(s)
    before = _study_accuracy(P, s)
    assert before > 0.8 and before > chance + 0.3  # present within one cell type
    Pc = P.copy()
    for k in np.unique(s):
        Pc[s == k] -= Pc[s == k].mean(axis=0)
    after = _study_accuracy(Pc, s)
    assert after < chance + 0.1  # removable: per-study centering takes it to chance


def test_integration_set_has_strong_batch_effects(small_kinds):
    a = S.generate("integration", 2000, n_genes=N_GENES, seed=1)
    assert a.obs["study"].nunique() >= 3 and a.obs["technology"].nunique() >= 3
    ct = a.obs["cell_type"].value_counts().index[0]
    m = (a.obs["cell_type"] == ct).to_numpy()
    s = a.obs["study"].cat.codes.to_numpy()[m]
    P = PCA(20, random_state=0).fit_transform(log1p_norm(a.X[m]))
    assert _study_accuracy(P, s) > 0.97
    lib = pd.Series(np.asarray(a.X.sum(axis=1)).ravel()).groupby(a.obs["batch"].to_numpy()).median()
    assert lib.max() / lib.min() > 2  # capture efficiency differs between technologies
    assert (
        a.uns["synthetic"]["options"]["batch_strength"]
        > small_kinds["pretrain"].uns["synthetic"]["options"]["batch_strength"]
    )


# ---- per-kind ground truth -------------------------------------------------------------------


def test_out_of_distribution_unseen_study_novel_types_shifted_programs(small_kinds):
    world = S.World(N_GENES, 16, seed=0)
    a = S.generate("out_of_distribution", 2000, n_genes=N_GENES, seed=1)
    assert not set(a.obs["study"]) & set(small_kinds["pretrain"].obs["study"])
    novel = a.obs["is_novel_type"].to_numpy()
    assert 0.05 < novel.mean() < 0.2
    assert not set(a.obs["cell_type"][novel]) & set(world.cell_types)
    assert set(a.obs["cell_type"][~novel]) <= set(world.cell_types)
    assert set(a.uns["novel_types"]) == set(a.obs["cell_type"][novel])
    # shifted programs: the same cells without the shift have a different expression profile
    b = S.generate("out_of_distribution", 2000, n_genes=N_GENES, seed=1, shift_strength=0.0)
    ct = a.obs["cell_type"][~novel].value_counts().index[0]
    m = (a.obs["cell_type"] == ct).to_numpy()
    d = log1p_norm(a.X[m]).mean(axis=0) - log1p_norm(b.X[m]).mean(axis=0)
    assert np.abs(d).max() > 0.8 and (np.abs(d) > 0.5).sum() >= 5


def test_timecourse_branching_with_fates():
    a = S.generate("timecourse", 3000, n_genes=N_GENES, seed=0)
    obs = a.obs
    times = np.sort(obs["time"].unique())
    assert len(times) >= 5 and obs["time"].dtype == float
    assert obs["fate"].notna().all() and obs["fate"].nunique() >= 2  # every cell, early ones too
    assert spearmanr(obs["time"], obs["lineage_progress"]).correlation > 0.8
    first, last = obs["time"] == times[0], obs["time"] == times[-1]
    assert obs.loc[first, "cell_type"].nunique() == 1  # one progenitor state at the start
    assert (obs.loc[last, "cell_type"].astype(str) == obs.loc[last, "fate"].astype(str)).mean() > 0.95
    # fate is written in the expression late, not yet at the start (priming grows with progress)
    L = log1p_norm(a.X)
    P = PCA(20, random_state=0).fit_transform(L)
    f = obs["fate"].cat.codes.to_numpy()

    def fate_acc(mask):
        mask = mask.to_numpy()
        return (cross_val_predict(KNeighborsClassifier(15), P[mask], f[mask], cv=5) == f[mask]).mean()

    chance = np.bincount(f[first.to_numpy()]).max() / first.sum()
    assert fate_acc(last) > 0.9
    assert fate_acc(first) < chance + 0.15
    truth = a.uns["timecourse_truth"]
    assert set(truth["fates"]) == set(obs["fate"].cat.categories)


def test_spatial_panel_capture_and_layers(small_kinds):
    a = S.generate("spatial", 3000, n_genes=N_GENES, seed=0)
    assert a.n_vars == round(0.1 * N_GENES)
    assert set(a.var_names) <= set(S.World(N_GENES, 16, seed=0).gene_ids)
    # lower capture: far fewer counts per cell than dissociated cells of the same world
    lib = np.median(np.asarray(a.X.sum(axis=1)).ravel())
    ref = np.median(np.asarray(small_kinds["in_distribution"].X.sum(axis=1)).ravel())
    assert lib < ref / 3
    obs = a.obs
    assert obs["x"].dtype == float and obs["y"].dtype == float
    assert np.allclose(a.obsm["spatial"], obs[["x", "y"]].to_numpy())
    # layered tissue: each depth layer is dominated by one lineage, and layers differ
    comp = pd.crosstab(obs["layer"], obs["lineage"], normalize="index")
    assert (comp.max(axis=1) > 0.45).all()
    assert comp.idxmax(axis=1).nunique() >= 3
    # layers are bands in y (depth)
    depth = obs.groupby("layer", observed=True)["y"].median()
    assert depth.is_monotonic_increasing


def test_perturbation_responses_depend_on_cell_type():
    a = S.generate("perturbation", 4000, n_genes=N_GENES, seed=0)
    obs = a.obs
    conds = list(obs["condition"].cat.categories)
    assert conds[0] == "control" and len(conds) >= 4
    truth = a.uns["perturbation_truth"]
    assert set(truth) == set(conds[1:])
    L = log1p_norm(a.X)
    types = obs["cell_type"].value_counts()
    types = types[types > 80].index
    for p in conds[1:]:
        genes = a.var_names.get_indexer(truth[p]["affected_genes"])
        assert (genes >= 0).all()
        effect, response = [], []
        for t in types:
            ctrl = ((obs["cell_type"] == t) & (obs["condition"] == "control")).to_numpy()
            pert = ((obs["cell_type"] == t) & (obs["condition"] == p)).to_numpy()
            effect.append(np.abs(L[pert][:, genes].mean(axis=0) - L[ctrl][:, genes].mean(axis=0)).mean())
            response.append(truth[p]["response"][truth[p]["cell_types"].index(t)])
        effect, response = np.asarray(effect), np.asarray(response)
        assert spearmanr(response, effect).correlation > 0.6, p
        assert effect.max() > 3 * effect.min(), p  # cell-type-dependent, not uniform
        # the knock-down of the target acts in every cell
        g = a.var_names.get_loc(truth[p]["target_gene"])
        ctrl, pert = (obs["condition"] == "control").to_numpy(), (obs["condition"] == p).to_numpy()
        assert L[pert, g].mean() < L[ctrl, g].mean() - 0.3


# ---- what makes the world hard (generator version 2) -------------------------------------------


def test_uninformative_genes_carry_no_program():
    w = S.World(N_GENES, 16, seed=0)
    assert w.informative.sum() == round(0.5 * N_GENES)
    assert np.all(w.programs[:, ~w.informative] == 0)
    # as many marker genes per program as a world where every gene is informative
    full = S.World(N_GENES, 16, seed=0, informative_fraction=1.0)
    markers = (np.abs(w.programs) > 0.2).sum(axis=1).mean()
    assert markers == pytest.approx((np.abs(full.programs) > 0.2).sum(axis=1).mean(), rel=0.25)


def test_uninformative_genes_do_not_separate_types(pretrain):
    w = pretrain.uns["synthetic"]
    world = S.World(N_GENES, 16, seed=w["world_seed"])
    L = log1p_norm(pretrain.X)
    y = pretrain.obs["cell_type"].cat.codes.to_numpy()
    means = np.stack([L[y == t].mean(axis=0) for t in np.unique(y)])
    between = means.var(axis=0)  # variance of the type means, per gene
    assert np.median(between[world.informative]) > 5 * np.median(between[~world.informative])


def test_subtypes_differ_from_their_lineage_by_small_programs():
    w = S.World(N_GENES, 16, seed=0)
    off = w.centroids - w.lineage_centroids[w.type_lineage]
    nz = np.abs(off) > 1e-4  # centroids are float32
    assert w.subtype_programs == 4 and np.all(nz.sum(axis=1) == 4)
    assert np.abs(off[nz]).min() >= 0.35 - 1e-4  # distinct in the true state
    # version 1's dense offsets are still available
    v1 = S.World(N_GENES, 16, seed=0, subtype_programs=0)
    assert (np.abs(v1.centroids - v1.lineage_centroids[v1.type_lineage]) > 1e-4).mean() > 0.99


def test_dropout_removes_drawn_counts_more_often_at_low_means():
    # the same stream draws the same NB counts; dropout then only removes entries, never changes one
    a = S.generate("pretrain", 1024, n_genes=N_GENES, seed=3, dropout=0.0)
    b = S.generate("pretrain", 1024, n_genes=N_GENES, seed=3)
    A, B = a.X.tocsr(), b.X.tocsr()
    assert B.nnz < A.nnz
    kept = B.multiply(A != 0)
    assert kept.nnz == B.nnz and np.allclose(kept.toarray(), B.toarray())  # a subset of A's entries
    # per gene: the share of non-zero entries lost falls with the gene's mean (logistic dropout)
    mean = np.asarray(A.mean(axis=0)).ravel()
    lost = 1 - (np.asarray((B != 0).sum(axis=0)).ravel() + 1) / (np.asarray((A != 0).sum(axis=0)).ravel() + 1)
    lo, hi = mean < np.quantile(mean, 0.25), mean > np.quantile(mean, 0.9)
    assert lost[lo].mean() > 2 * lost[hi].mean() and lost[hi].mean() < 0.1


def test_saturation_compresses_only_highly_expressed_genes():
    a = S.generate("pretrain", 1024, n_genes=N_GENES, seed=4, saturation=0.0, dropout=0.0)
    b = S.generate("pretrain", 1024, n_genes=N_GENES, seed=4, dropout=0.0)
    ma, mb = np.asarray(a.X.mean(axis=0)).ravel(), np.asarray(b.X.mean(axis=0)).ravel()
    top, low = ma > np.quantile(ma, 0.99), (ma > 0.05) & (ma < np.quantile(ma, 0.5))
    assert (mb[top] / ma[top]).mean() < 0.7  # the highest genes lose much of their counts
    assert (mb[low] / ma[low]).mean() == pytest.approx(1.0, abs=0.1)  # low genes keep theirs: nonlinear


def test_stress_response_is_a_batch_by_lineage_interaction():
    w = S.World(N_GENES, 16, seed=0)
    lfc, strength = w.stress_response("study1", len(w.lineage_names))
    assert 0 < (lfc != 0).mean() < 0.05 and strength.shape == (len(w.lineage_names),)
    assert strength.max() - strength.min() > 0.5  # lineages respond differently: no per-gene shift removes it
