"""The torch methods (scJEPA + ablations, scMAE, scBT, supervised): views, losses, learning, saving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scjepa.data.store import ArrayLoader
from scjepa.errors import InputError
from scjepa.methods import FAMILIES, embed_adata, embed_file, get_family, load_encoder, load_model, pretrain
from scjepa.methods.scjepa import ScJEPA, ScJEPAModule, ScJEPAHParams, masked_views

N_GENES = 200
SMALL = dict(hidden=(64, 32), latent=16, progress=False, val_every=0, checkpoint_every=0, log_every=8)
FAMILY_HP = {
    "scjepa": dict(n_local_views=4, sigreg_directions=32, head_hidden=(32,), head_dim=16, max_epochs=25, lr=5e-3,
               lambda_sigreg=0.1, gamma_recon=0.003),  # every term weighted enough to be seen falling in 25 epochs
    "mae": dict(max_epochs=25, lr=5e-3),
    "barlow_twins": dict(projector=(64, 64), max_epochs=10, lr=3e-3),
    "supervised": dict(max_epochs=5, lr=3e-3),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny matmuls run faster on one thread, and far faster on a shared, oversubscribed machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def mixture(n: int, d: int = N_GENES, k: int = 6, seed: int = 0, n_prog: int = 20, n_noise: int = 40):
    """Counts-like cell types: each type up-regulates a 20-gene programme four-fold; 40 over-dispersed
    nuisance genes carry most of the Euclidean variance, so a random projection separates the types
    poorly while the low-rank structure is there to learn. Returns log1p(CP10k) float32, labels."""
    rng = np.random.default_rng(seed)
    base = np.exp(rng.normal(0, 1, d)) * 0.3
    y = rng.integers(0, k, n)
    profiles = np.tile(base, (k, 1))
    for j in range(k):
        profiles[j, rng.choice(d - n_noise, n_prog, replace=False)] *= 4
    mu = profiles[y] * np.exp(rng.normal(0, 0.4, (n, 1)))
    theta = np.full(d, 5.0)
    theta[d - n_noise :] = 0.1
    mu[:, d - n_noise :] *= 8
    counts = rng.poisson(rng.gamma(theta, mu / theta))
    X = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def data():
    X, y = mixture(1600)
    return {"X": X, "y": y, "train": np.arange(1000), "ref": np.arange(1000, 1300), "query": np.arange(1300, 1600),
            "genes": [f"ENSG{i:05d}" for i in range(N_GENES)]}


def knn_f1(E, data) -> float:
    from sklearn.metrics import f1_score
    from sklearn.neighbors import KNeighborsClassifier

    y, ref, q = data["y"], data["ref"], data["query"]
    knn = KNeighborsClassifier(5).fit(E[ref], y[ref])
    return f1_score(y[q], knn.predict(E[q]), average="macro")


def make(family: str, **over):
    return FAMILIES[family](**{**SMALL, **FAMILY_HP[family], **over})


@pytest.fixture(scope="module")
def fitted(data):
    loader = ArrayLoader(data["X"][data["train"]], data["y"][data["train"]], batch_size=125, seed=0,
                         classes=[f"type{i}" for i in range(6)], gene_ids=data["genes"])
    return {fam: make(fam).fit(loader) for fam in FAMILY_HP}


# ----------------------------------------------------------------------------------------- views

def test_masked_views_have_the_masking_rate_and_keep_the_rest():
    x = torch.rand(125, N_GENES) + 0.1  # no zeros: every zero is a mask
    v = masked_views(x, torch.tensor([0.5, 0.5, 0.1]), torch.Generator().manual_seed(0))
    assert v.shape == (3, 125, N_GENES)
    zero = v == 0
    assert zero[:2].float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert zero[2].float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert torch.equal(v[~zero], x.expand_as(v)[~zero])  # x ⊙ m, no rescaling by default
    r = masked_views(x, torch.tensor([0.5]), torch.Generator().manual_seed(0), rescale=True)
    assert torch.allclose(r[r != 0], (2 * x.expand_as(r))[r != 0])


def test_views_batch_global_first_then_locals_with_independent_masks():
    m = ScJEPAModule(N_GENES, ScJEPAHParams(hidden=(8,), latent=4, n_local_views=8, n_global_views=2))
    x = torch.rand(50, N_GENES) + 0.1
    xv = m.views(x, torch.Generator().manual_seed(0)).view(10, 50, N_GENES)
    assert torch.equal(xv[0], x)  # the unmasked global view
    assert (xv[1] == 0).float().mean().item() == pytest.approx(0.1, abs=0.02)  # the light second global
    masks = xv[2:] == 0
    assert masks.float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert not torch.equal(masks[0], masks[1])


def test_every_view_reconstructs_the_unmasked_input():
    hp = ScJEPAHParams(hidden=(8,), latent=4, n_local_views=3, sigreg_directions=8, head_hidden=(), head_dim=4)
    m = ScJEPAModule(N_GENES, hp)
    x = torch.rand(20, N_GENES)

    class Oracle(torch.nn.Module):  # returns the UNMASKED x for every row of every view
        def forward(self, z):
            return x.repeat(z.shape[0] // x.shape[0], 1)

    m.decoder = Oracle()
    out = m.training_step({"x": x}, torch.Generator().manual_seed(0))
    assert out["recon"].item() == 0.0


def test_directions_are_drawn_once_per_step_and_change_between_steps():
    m = ScJEPAModule(N_GENES, ScJEPAHParams(hidden=(16,), latent=8, n_local_views=4, sigreg_directions=16))
    drawn = []
    orig = m.sigreg.directions
    m.sigreg.directions = lambda dim, generator=None: drawn.append(orig(dim, generator)) or drawn[-1]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, N_GENES)
    m.training_step({"x": x}, g)
    m.training_step({"x": x}, g)
    assert len(drawn) == 2 and not torch.equal(drawn[0], drawn[1])


# ------------------------------------------------------------------------------------ ablations

@pytest.mark.parametrize("over, terms", [
    ({}, ("loss", "sim", "sigreg", "recon")),
    ({"gamma_recon": 0.0}, ("loss", "sim", "sigreg")),  # w/o reconstruction
    ({"lejepa": False}, ("loss", "recon")),  # w/o LeJEPA = denoising autoencoder
    ({"n_global_views": 2}, ("loss", "sim", "sigreg", "recon")),
    ({"sigreg_window": "lejepa", "projection_head": False}, ("loss", "sim", "sigreg", "recon")),
])
def test_ablations_are_hyperparameter_settings(over, terms):
    hp = ScJEPAHParams(hidden=(16,), latent=8, n_local_views=4, sigreg_directions=16, **over)
    m = ScJEPAModule(N_GENES, hp)
    assert m.loss_terms == terms
    assert (m.decoder is None) == (hp.gamma_recon == 0)
    assert (m.head is None) == (not hp.lejepa or not hp.projection_head)
    out = m.training_step({"x": torch.rand(32, N_GENES)}, torch.Generator().manual_seed(0))
    assert set(out) == set(terms) and torch.isfinite(out["loss"])
    out["loss"].backward()
    if not hp.lejepa:
        assert out["loss"].item() == pytest.approx(hp.gamma_recon * out["recon"].item())
    else:
        want = (1 - hp.lambda_sigreg) * out["sim"] + hp.lambda_sigreg * out["sigreg"]
        want = want + hp.gamma_recon * out.get("recon", 0.0)
        assert out["loss"].item() == pytest.approx(float(want.detach()), rel=1e-6)


def test_window_changes_the_quadrature_weights():
    paper = ScJEPAModule(N_GENES, ScJEPAHParams(hidden=(8,), latent=4))
    lejepa = ScJEPAModule(N_GENES, ScJEPAHParams(hidden=(8,), latent=4, sigreg_window="lejepa"))
    assert (lejepa.sigreg.weights[1:] > paper.sigreg.weights[1:]).all()


@pytest.mark.parametrize("bad", [{"n_global_views": 3}, {"mask_rate": 1.0}, {"sigreg_window": "x"},
                                 {"sigreg_points": 16}, {"lejepa": False, "gamma_recon": 0.0}, {"nope": 1}])
def test_bad_hyperparameters_name_the_key(bad):
    with pytest.raises(InputError, match=f"'{next(iter(bad))}'|'gamma_recon'"):
        ScJEPA(**bad)


class _Fixed(torch.nn.Module):
    """Returns a fixed tensor whatever its input: embeddings / reconstructions chosen by hand."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, _):
        return self.value


def test_l_sim_sum_is_eq4_by_hand():
    """Eq. 4 with sim_reduction="sum": mean over cells and local views of ||z_n - z_n^(v)||^2 (sum over dims)."""
    hp = ScJEPAHParams(hidden=(8,), latent=2, n_local_views=2, sigreg_directions=4, projection_head=False,
                       gamma_recon=0.0, sim_reduction="sum")
    m = ScJEPAModule(N_GENES, hp)
    # (G + V) x N x K = 3 views x 2 cells x 2 dims: global [[0,0],[1,1]], view 1 [[1,0],[1,1]], view 2 [[0,2],[3,1]]
    z = torch.tensor([[0., 0.], [1., 1.], [1., 0.], [1., 1.], [0., 2.], [3., 1.]])
    m.encoder = _Fixed(z)
    out = m.training_step({"x": torch.rand(2, N_GENES)}, torch.Generator().manual_seed(0))
    # squared distances: view 1: 1, 0; view 2: 4, 4 -> mean over 4 (cell, view) pairs = 9 / 4
    assert out["sim"].item() == pytest.approx(9 / 4)
    m.hp.sim_reduction = "mean"  # our former reduction: the same over K = 2 dims
    assert m.training_step({"x": torch.rand(2, N_GENES)}, torch.Generator())["sim"].item() == pytest.approx(9 / 8)


def test_l_recon_sum_is_eq8_by_hand():
    """Eq. 8 with recon_reduction="sum": mean_n ||x_n - xhat_n||^2 of the global view + the mean over local views
    of the same, every view reconstructing the UNMASKED x."""
    hp = ScJEPAHParams(hidden=(8,), latent=2, n_local_views=2, sigreg_directions=4, lejepa=False,
                       recon_reduction="sum")
    m = ScJEPAModule(3, hp)
    x = torch.tensor([[1., 0., 2.], [0., 0., 0.]])
    xhat = torch.cat([x, x + 1.0, x - 2.0])  # global exact; view 1 off by 1 per gene; view 2 off by 2
    m.decoder = _Fixed(xhat)
    out = m.training_step({"x": x}, torch.Generator().manual_seed(0))
    # global: 0; view 1: ||1||^2 over 3 genes = 3 per cell; view 2: 4 * 3 = 12 per cell -> 0 + (3 + 12) / 2
    assert out["recon"].item() == pytest.approx(7.5)
    assert out["loss"].item() == pytest.approx(hp.gamma_recon * 7.5)


@pytest.mark.parametrize("n", [16, 64])
def test_sigreg_is_weighted_as_at_the_reference_batch(n):
    """T_EP = N x (a mean over the batch) grows with N; sigreg_reference_batch rescales it to N_ref cells, so a
    lambda means the same at batch 256 (default run) and 1024 (paper)."""
    x = torch.rand(n, N_GENES)
    outs = {}
    for ref in (0, 1024):
        torch.manual_seed(0)
        m = ScJEPAModule(N_GENES, ScJEPAHParams(hidden=(8,), latent=4, n_local_views=2, sigreg_directions=8,
                                                gamma_recon=0.0, sigreg_reference_batch=ref))
        outs[ref] = m.training_step({"x": x}, torch.Generator().manual_seed(1))
    assert outs[1024]["sigreg"].item() == pytest.approx(outs[0]["sigreg"].item() * 1024 / n, rel=1e-5)
    assert outs[1024]["sim"].item() == pytest.approx(outs[0]["sim"].item())


def test_the_losses_are_the_papers_equations_by_default():
    hp = ScJEPAHParams()
    assert (hp.sim_reduction, hp.recon_reduction, hp.sigreg_reference_batch) == ("sum", "sum", 1024)


def test_defaults_are_the_papers_where_it_fixes_them():
    hp = ScJEPAHParams()
    assert (hp.n_local_views, hp.mask_rate) == (8, 0.5)
    # The paper gives neither lambda nor gamma: both come from our validation sweep (config/sweeps.yaml)
    assert (hp.lambda_sigreg, hp.gamma_recon) == (0.02, 0.3)
    assert (hp.sigreg_directions, hp.sigreg_points, hp.sigreg_t_max, hp.sigreg_window) == (256, 17, 5.0, "paper")
    assert (hp.hidden, hp.latent, hp.dropout) == ((512, 512, 256, 256), 64, 0.1)
    assert (hp.lr, hp.weight_decay, hp.lr_gamma) == (1e-3, 0.05, 0.9)
    assert FAMILIES["barlow_twins"]().hparams.lambda_offdiag == 0.0051
    assert FAMILIES["mae"]().hparams.mask_rate == 0.5


# ------------------------------------------------------------------------------------- learning

@pytest.mark.parametrize("family", list(FAMILY_HP))
def test_losses_decrease(fitted, family):
    curve = fitted[family].curve_
    first, last = curve[0], curve[-1]
    assert last["loss"] < 0.8 * first["loss"]
    if family == "scjepa":
        assert last["recon"] < 0.8 * first["recon"]
        assert last["sigreg"] < 0.8 * first["sigreg"]
    if family == "barlow_twins":
        assert last["on_diag"] < first["on_diag"]


@pytest.mark.parametrize("family", list(FAMILY_HP))
def test_zero_shot_knn_beats_a_random_projection(fitted, data, family):
    rng = np.random.default_rng(0)
    random = max(knn_f1(data["X"] @ rng.normal(size=(N_GENES, 16)), data) for _ in range(3))
    learned = knn_f1(fitted[family].transform(data["X"]), data)
    assert learned > random + 0.1, (learned, random)


# --------------------------------------------------------------------------------- save / load

@pytest.mark.parametrize("family", list(FAMILY_HP))
def test_save_load_gives_identical_embeddings(fitted, data, tmp_path, family):
    m = fitted[family]
    m.save(tmp_path / family)
    meta = json.loads((tmp_path / family / "hparams.json").read_text())
    assert meta["family"] == family and meta["n_genes"] == N_GENES and meta["gene_ids_file"] == "genes.txt"
    assert (tmp_path / family / "genes.txt").read_text().split() == data["genes"]
    assert (tmp_path / family / "curve.csv").exists()
    X = data["X"][:300]
    emb = m.transform(X)
    assert emb.dtype == np.float32 and emb.shape == (300, 16)
    loaded = load_model(tmp_path / family)
    assert type(loaded) is type(m) and loaded.hparams == m.hparams
    assert np.array_equal(loaded.transform(X), emb)
    enc = load_encoder(tmp_path / family)
    with torch.no_grad():
        assert np.array_equal(enc(torch.from_numpy(X)).numpy(), emb)
    import scipy.sparse as sp

    assert np.array_equal(loaded.transform(sp.csr_matrix(X)), emb)


def test_supervised_predicts_and_keeps_its_classes(fitted, data, tmp_path):
    m = fitted["supervised"]
    pred = m.predict(data["X"][data["query"]])
    assert (pred == np.array([f"type{i}" for i in data["y"][data["query"]]])).mean() > 0.8
    m.save(tmp_path / "sup")
    assert load_model(tmp_path / "sup").classes_ == m.classes_


def test_registry_is_lazy_and_complete():
    assert set(FAMILIES) >= {"scjepa", "mae", "barlow_twins", "supervised", "pca", "scvi", "harmony"}
    assert FAMILIES.paths["pca"] == "scjepa.methods.pca:PCAMethod"
    assert FAMILIES["scjepa"] is ScJEPA and "nope" not in FAMILIES
    with pytest.raises(InputError, match="family"):
        get_family("nope")


def test_load_encoder_refuses_non_torch_models(tmp_path):
    (tmp_path / "hparams.json").write_text(json.dumps({"family": "pca", "n_genes": 3}))
    with pytest.raises(ValueError, match="no torch encoder"):
        load_encoder(tmp_path)


# ------------------------------------------------------------------------ a user's own AnnData

def test_embed_adata_aligns_genes_by_id(fitted, data, tmp_path):
    import anndata as ad

    m = fitted["mae"]
    m.save(tmp_path / "mae")
    X, genes = data["X"][:200], np.array(data["genes"])
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(N_GENES, 150, replace=False))  # 75 % of the genes, shuffled, + strangers
    order = rng.permutation(len(keep))
    cols = keep[order]
    user = ad.AnnData(np.hstack([X[:, cols], np.ones((200, 5), np.float32)]))
    user.var_names = list(genes[cols]) + [f"OTHER{i}" for i in range(5)]
    expected_input = np.zeros_like(X)
    expected_input[:, keep] = X[:, keep]
    want = m.transform(expected_input)
    assert np.allclose(embed_adata(tmp_path / "mae", user), want, atol=1e-6)
    import scipy.sparse as sp

    user.X = sp.csr_matrix(user.X)
    assert np.allclose(embed_adata(tmp_path / "mae", user), want, atol=1e-6)
    few = user[:, :80].copy()  # 40 % of the model's genes
    with pytest.raises(InputError, match="40.0%"):
        embed_adata(tmp_path / "mae", few)


def test_pretrain_and_embed_file_without_snakemake(data, tmp_path):
    import anndata as ad
    import pandas as pd

    X, y = data["X"], data["y"]
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{i}" for i in y]),
                        "split": pd.Categorical(np.where(np.arange(len(y)) < 1000, "train", "val"))},
                       index=[f"cell{i}" for i in range(len(y))])
    corpus = ad.AnnData(X, obs=obs)
    corpus.var_names = data["genes"]
    corpus.write_h5ad(tmp_path / "corpus.h5ad")
    loader = ArrayLoader(X[:1000], y[:1000], batch_size=125, seed=3, gene_ids=data["genes"])
    hp = {"family": "scjepa", **SMALL, **FAMILY_HP["scjepa"], "max_epochs": 2, "val_every": 8}
    out = tmp_path / "models" / "scjepa"
    method = pretrain(hp, None, tmp_path / "corpus.h5ad", out, seed=3, method_name="scjepa_small", loader=loader,
                      tune_malloc=False)
    assert method.hparams.seed == 3
    assert sorted(p.name for p in out.iterdir()) == ["curve.csv", "encoder.pt", "genes.txt", "hparams.json", "model.pt"]
    assert (tmp_path / "models" / ".scjepa.work" / "checkpoint.pt").exists()  # the finished run's
    curve = pd.read_csv(out / "curve.csv")
    assert list(curve.columns) == ["step", "epoch", "loss", "sim", "sigreg", "recon", "lr", "val_knn_macro_f1"]
    assert curve["val_knn_macro_f1"].notna().sum() >= 2 and curve["step"].iloc[-1] == 16
    assert json.loads((out / "hparams.json").read_text())["method"] == "scjepa_small"

    embed_file(out, tmp_path / "corpus.h5ad", tmp_path / "emb.h5ad")
    emb = ad.read_h5ad(tmp_path / "emb.h5ad")
    assert list(emb.obs_names) == list(corpus.obs_names) and emb.uns["method"] == "scjepa_small"
    assert emb.obsm["X_emb"].dtype == np.float32 and emb.obsm["X_emb"].shape == (1600, 16)
    assert np.array_equal(emb.obsm["X_emb"], method.transform(X))


def test_pretrain_rerun_after_model_deleted_resumes_at_the_end(data, tmp_path, caplog):
    """A scheduler killed after the model was written deletes it and reruns: no training is redone."""
    import shutil

    X, y = data["X"], data["y"]
    hp = {"family": "scjepa", **SMALL, **FAMILY_HP["scjepa"], "max_epochs": 1}
    out = tmp_path / "models" / "scjepa"

    def run(h):
        loader = ArrayLoader(X[:500], y[:500], batch_size=125, seed=3, gene_ids=data["genes"])
        return pretrain(h, None, None, out, seed=3, method_name="scjepa", loader=loader, tune_malloc=False)

    import torch

    def weights():
        return torch.load(out / "model.pt", map_location="cpu", weights_only=False)

    run(hp)
    first = weights()
    shutil.rmtree(out)
    caplog.clear()  # the first run's records (captured when an earlier test set the logger to INFO)
    with caplog.at_level("INFO", logger="scjepa.methods.engine"):
        run(hp)
    assert "resumed from" in caplog.text and "trained" not in caplog.text  # zero steps
    again = weights()
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)
    # another hyper-parameter: the finished checkpoint is not resumed, training starts over
    shutil.rmtree(out)
    caplog.clear()
    with caplog.at_level("INFO", logger="scjepa.methods.engine"):
        run({**hp, "lr": hp.get("lr", 1e-3) * 2})
    assert "not resuming the finished run" in caplog.text and "trained 4 steps" in caplog.text
    # a shorter run than the checkpoint: starts over rather than returning a longer-trained model
    shutil.rmtree(out)
    caplog.clear()
    with caplog.at_level("INFO", logger="scjepa.methods.engine"):
        run({**hp, "lr": hp.get("lr", 1e-3) * 2, "max_steps": 2})
    assert "past this run's end" in caplog.text and "trained 2 steps" in caplog.text
