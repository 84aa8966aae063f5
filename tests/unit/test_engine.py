"""The training engine: budget, schedule, curve, val kNN, checkpoints and exact resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from scjepa.data.store import ArrayLoader
from scjepa.errors import InputError
from scjepa.methods import FAMILIES
from scjepa.methods.engine import CHECKPOINT, CURVE, ValKNN

N_GENES = 60
TINY = dict(hidden=(32,), latent=8, progress=False, log_every=2, val_every=0, checkpoint_every=3, max_epochs=3)
FAMILY_HP = {
    "scjepa": dict(n_local_views=3, sigreg_directions=16, head_hidden=(16,), head_dim=8, n_global_views=2),
    "mae": {},
    "barlow_twins": dict(projector=(16, 16)),
    "supervised": {},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class ListLoader:
    """A loader without ``skip``: the engine must skip consumed batches itself."""

    def __init__(self, X, y, batch_size, seed):
        self.X, self.y, self.batch_size, self.seed, self.epoch = X, y, batch_size, seed, 0
        self.n_genes, self.classes = X.shape[1], [str(i) for i in range(int(y.max()) + 1)]

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.X) // self.batch_size

    def __iter__(self):
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.X))
        for i in range(len(self)):
            idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
            yield {"x": torch.from_numpy(self.X[idx]), "y": torch.from_numpy(self.y[idx])}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    centres = rng.gamma(2.0, 1.0, (3, N_GENES))
    X = np.log1p(rng.poisson(centres[y])).astype(np.float32)
    return X, y.astype(np.int64)


def loader_for(kind, data):
    X, y = data
    if kind == "array":
        return ArrayLoader(X, y, batch_size=100, seed=1)  # 5 batches per epoch
    return ListLoader(X, y, batch_size=100, seed=1)


class Interrupt(Exception):
    pass


def interrupt_at(step):
    def cb(info):
        if info["step"] == step:
            raise Interrupt
    return cb


def state(method):
    return {k: v.clone() for k, v in method.module_.state_dict().items()}


@pytest.mark.parametrize("family, loader_kind, kill_at", [
    ("scjepa", "array", 8),  # last checkpoint at step 6 = mid-epoch 1 (batch 1 of 5)
    ("scjepa", "list", 13),  # checkpoint at 12 = mid-epoch 2, loader without skip()
    ("barlow_twins", "array", 5),  # checkpoint at the epoch end (step 5)... and step 3 before it
    ("mae", "list", 4),
    ("supervised", "array", 11),
])
def test_interrupted_run_resumes_to_identical_weights(data, tmp_path, family, loader_kind, kill_at):
    hp = {**TINY, **FAMILY_HP[family]}
    full = FAMILIES[family](**hp).fit(loader_for(loader_kind, data), out_dir=tmp_path / "full")

    with pytest.raises(Interrupt):
        FAMILIES[family](**hp).fit(loader_for(loader_kind, data), out_dir=tmp_path / "cut",
                                   callbacks=[interrupt_at(kill_at)])
    assert (tmp_path / "cut" / CHECKPOINT).exists()
    resumed = FAMILIES[family](**hp).fit(loader_for(loader_kind, data), out_dir=tmp_path / "cut")

    a, b = state(full), state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["step"] for r in full.curve_] == [r["step"] for r in resumed.curve_]
    assert [r["loss"] for r in full.curve_] == [r["loss"] for r in resumed.curve_]


def test_resuming_a_finished_run_changes_nothing(data, tmp_path):
    hp = {**TINY, **FAMILY_HP["mae"]}
    first = FAMILIES["mae"](**hp).fit(loader_for("array", data), out_dir=tmp_path)
    steps = []
    again = FAMILIES["mae"](**hp).fit(loader_for("array", data), out_dir=tmp_path,
                                      callbacks=[lambda info: steps.append(info["step"])])
    assert steps == []
    for k, v in state(first).items():
        assert torch.equal(v, state(again)[k])


def test_checkpoint_of_other_hyperparameters_is_refused(data, tmp_path):
    """An interrupted run's checkpoint refuses other hyper-parameters; a finished one is set aside."""
    with pytest.raises(Interrupt):
        FAMILIES["mae"](**TINY).fit(loader_for("array", data), out_dir=tmp_path, callbacks=[interrupt_at(4)])
    assert (tmp_path / CHECKPOINT).exists()  # written at step 3, unfinished
    with pytest.raises(InputError, match="lr"):
        FAMILIES["mae"](**{**TINY, "lr": 0.01}).fit(loader_for("array", data), out_dir=tmp_path)
    # A longer or shorter budget is fine: training continues where it stopped.
    steps = []
    m = FAMILIES["mae"](**{**TINY, "max_steps": 7}).fit(loader_for("array", data), out_dir=tmp_path,
                                                         callbacks=[lambda info: steps.append(info["step"])])
    assert steps == [4, 5, 6, 7] and m.curve_[-1]["step"] == 7
    # The finished run's checkpoint with another lr is not resumed: training starts over from step 1.
    steps.clear()
    FAMILIES["mae"](**{**TINY, "lr": 0.01, "max_steps": 2}).fit(
        loader_for("array", data), out_dir=tmp_path, callbacks=[lambda info: steps.append(info["step"])])
    assert steps == [1, 2]


def test_budget_schedule_and_curve(data, tmp_path):
    X, y = data
    hp = {**TINY, "max_epochs": 4, "max_steps": 12, "val_every": 4, "lr": 1e-3}
    m = FAMILIES["scjepa"](**hp, **FAMILY_HP["scjepa"]).fit(
        loader_for("array", data), out_dir=tmp_path, val=(X[:200], y[:200]))
    curve = pd.read_csv(tmp_path / CURVE)
    assert list(curve.columns) == ["step", "epoch", "loss", "sim", "sigreg", "recon", "lr", "val_knn_macro_f1"]
    assert curve["step"].tolist() == [2, 4, 5, 6, 8, 10, 12]  # every 2 steps, epoch ends (5, 10), the last
    assert curve["step"].iloc[-1] == 12  # max_steps wins over max_epochs
    val_steps = curve.loc[curve["val_knn_macro_f1"].notna(), "step"].tolist()
    assert val_steps == [4, 5, 8, 10, 12]
    assert curve["val_knn_macro_f1"].dropna().between(0, 1).all()
    # StepLR: one step per epoch, gamma 0.9; a row carries the epoch and lr of its steps
    rows = curve.set_index("step")
    assert rows.loc[[4, 5, 6, 10, 12], "epoch"].tolist() == [0, 0, 1, 1, 2]
    assert rows.loc[5, "lr"] == pytest.approx(1e-3) and rows.loc[10, "lr"] == pytest.approx(0.9e-3)
    assert rows.loc[12, "lr"] == pytest.approx(1e-3 * 0.9**2)
    assert (m.curve_[-1]["epoch"], m.curve_[-1]["step"]) == (2, 12)


def test_val_knn_scores_a_perfect_embedding_one():
    X = np.repeat(np.eye(3, dtype=np.float32) * 10, 20, axis=0)
    labels = np.repeat(["a", "b", "c"], 20)

    class Identity(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x

    val = ValKNN(X, labels, k=5)
    assert len(val.ref) == 30 and len(val.query) == 30 and not set(val.ref) & set(val.query)
    assert val.score(Identity()) == 1.0
    with pytest.raises(InputError):
        ValKNN(X[:1], labels[:1])
    # Unlabelled cells (None / "" / -1) are left out.
    assert len(ValKNN(X, np.array([None] * 30 + ["a"] * 30, dtype=object)).ref) == 15


def test_empty_loader_is_an_error(tmp_path):
    class Empty:
        n_genes = N_GENES

        def __iter__(self):
            return iter(())

    with pytest.raises(InputError, match="no batches"):
        FAMILIES["mae"](**TINY).fit(Empty())


# ---- CSR batches densified by the engine; multi-worker store loader -------------------------------

@pytest.mark.parametrize("family", list(FAMILY_HP))
def test_sparse_batches_train_bit_identically(data, family):
    """CSR batches densified by the engine (the CPU run of the path CUDA takes) give the weights of the
    host-densified batches, bit for bit: the default run's models do not change."""
    X, y = data
    X = np.where(X > 1.0, X, 0).astype(np.float32)  # sparse-looking: ~half the entries zero
    hp = {**TINY, **FAMILY_HP[family], "checkpoint_every": 0}
    dense = FAMILIES[family](**hp).fit(ArrayLoader(X, y, batch_size=100, seed=1))
    sparse = FAMILIES[family](**hp).fit(ArrayLoader(X, y, batch_size=100, seed=1, sparse=True))
    a, b = state(dense), state(sparse)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss"] for r in dense.curve_] == [r["loss"] for r in sparse.curve_]


@pytest.fixture(scope="module")
def store(data, tmp_path_factory):
    import anndata as ad
    import scipy.sparse as sp

    from scjepa.data.store import build_store

    X, y = data
    d = tmp_path_factory.mktemp("store")
    obs = pd.DataFrame({"cell_type": pd.Categorical(np.asarray(list("abc"))[y]),
                        "split": pd.Categorical(["train"] * len(y))}, index=[f"c{i}" for i in range(len(y))])
    ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(N_GENES)])).write_h5ad(
        d / "p.h5ad")
    build_store(d / "p.h5ad", d / "store", shard_size=64, splits=("train",), progress=False)
    return d / "store"


def test_multi_worker_store_loader_resumes_exactly(store, tmp_path):
    """Three loader workers, CSR batches, killed mid-epoch (its checkpoint: epoch 1, batch 2 of 6) and
    resumed: the weights of an uninterrupted 1-worker run, bit for bit."""
    from scjepa.data.store import StoreLoader

    def loader(workers):
        return StoreLoader(store, batch_size=80, seed=2, buffer_shards=2, workers=workers, sparse=True)

    hp = {**TINY, **FAMILY_HP["scjepa"], "checkpoint_every": 4}
    full = FAMILIES["scjepa"](**hp).fit(loader(1), out_dir=tmp_path / "full")
    with pytest.raises(Interrupt):
        FAMILIES["scjepa"](**hp).fit(loader(3), out_dir=tmp_path / "cut", callbacks=[interrupt_at(10)])
    ck = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)
    assert ck["state"] == {"step": 8, "epoch": 1, "batch_in_epoch": 2}
    resumed = FAMILIES["scjepa"](**hp).fit(loader(3), out_dir=tmp_path / "cut")
    a, b = state(full), state(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k
