"""Data-parallel pretraining: 2 ranks on CPU (real torch.distributed, gloo; real torchrun).

- Every torch family trained on 2 ranks ends with the weights of the 1-process run with the same global
  batch (within float tolerance): batch statistics (SIGReg, Barlow Twins' cross-correlation and its
  projector's BatchNorm), ratio losses and every per-cell random draw are global (models/distributed.py).
- ``pretrain`` through the workflow's launcher (torchrun) equals the 1-process ``pretrain``; a 2-rank run
  killed (SIGKILL, whole process tree) after a checkpoint and started again ends with the same weights as
  the uninterrupted 2-rank run, bit for bit.

This file is also the ranks' program for the first test (``torchrun ... test_ddp.py OUT``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from scjepa.data.store import ArrayLoader

N_GENES, N_CELLS, BATCH = 60, 400, 100  # 4 global batches per epoch
TINY = dict(hidden=(32,), latent=8, progress=False, log_every=2, val_every=0, checkpoint_every=0, max_epochs=2,
            lr=3e-3)
FAMILY_HP = {
    # masks (2 global views: a light mask too), encoder + decoder dropout, SIGReg over the batch
    "scjepa": dict(n_local_views=3, sigreg_directions=16, head_hidden=(16,), head_dim=8, n_global_views=2),
    "mae": {},  # masks; loss = mean over the masked entries (a ratio)
    "barlow_twins": dict(projector=(16, 16, 16)),  # noise; BatchNorm and cross-correlation over the batch
    "supervised": {},  # class-weighted cross-entropy (a ratio)
    "supervised_counted": {},  # ... with class weights from counts summed over the ranks
}
# Weights the loss cannot see. Barlow Twins: the encoder's last bias shifts every embedding by the same
# vector, which the projector's bias-free Linear + BatchNorm removes, so its gradient is 0 up to float
# noise, and Adam turns noise into steps of size lr (its running mean follows). The two runs differ there
# by O(lr) (and the loss curves still agree to 1e-7); every other weight agrees to ~1e-7.
UNSEEN = {"barlow_twins": {"encoder.net.3.bias", "projector.1.running_mean"}}


def make_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, N_CELLS)
    centres = rng.gamma(2.0, 1.0, (3, N_GENES))
    X = np.log1p(rng.poisson(centres[y])).astype(np.float32)
    return X, y.astype(np.int64)


class Unlabelled:
    """A loader that, like StoreLoader, has no ``y`` or ``class_counts``: the supervised method counts
    the classes in one pass, which a rank does over its part of the batches only."""

    def __init__(self, loader):
        self.loader = loader
        self.n_genes, self.classes = loader.n_genes, loader.classes

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)

    def set_epoch(self, epoch):
        self.loader.set_epoch(epoch)

    def skip(self, n):
        self.loader.skip(n)


def fit(family: str, rank: int = 0, world: int = 1):
    from scjepa.methods import FAMILIES

    X, y = make_data()
    y[::7] = -1  # some cells without a label (ignored by the supervised loss, uncounted)
    loader = ArrayLoader(X, y, batch_size=BATCH, seed=1, sparse=True, rank=rank, world_size=world,
                         classes=["a", "b", "c"])
    if family == "supervised_counted":
        return FAMILIES["supervised"](**{**TINY, **FAMILY_HP["supervised"]}).fit(Unlabelled(loader))
    return FAMILIES[family](**{**TINY, **FAMILY_HP[family]}).fit(loader)


def _ranks_main(out: str) -> None:
    """One of the ranks: train every family, rank 0 saves weights and curves."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        for family in FAMILY_HP:
            m = fit(family, rank, world)
            if rank == 0:
                torch.save({"state": m.module_.state_dict(), "curve": m.curve_}, Path(out) / f"{family}.pt")
    finally:
        dist.destroy_process_group()


def torchrun(n: int, *args, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    t = time.perf_counter()
    r = torchrun(2, str(Path(__file__)), str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return {f: torch.load(out / f"{f}.pt", weights_only=False) for f in FAMILY_HP}, time.perf_counter() - t


def _init_state(family):
    from scjepa.methods import FAMILIES

    family = family.removesuffix("_counted")
    m = FAMILIES[family](**{**TINY, **FAMILY_HP[family]})
    if family == "supervised":
        m.prepare(ArrayLoader(*make_data(), batch_size=BATCH))
    torch.manual_seed(m.hparams.seed)
    return m.build_module(N_GENES).state_dict()


@pytest.mark.parametrize("family", list(FAMILY_HP))
def test_two_ranks_train_like_one_process(two_ranks, family):
    runs, _ = two_ranks
    one = fit(family)
    two = runs[family]
    a, b, init = one.module_.state_dict(), two["state"], _init_state(family)
    assert a.keys() == b.keys()
    keys = [k for k in a if a[k].is_floating_point() and k not in UNSEEN.get(family, ())]
    moved = sum(float((a[k] - init[k]).norm()) for k in keys)
    gap = sum(float((a[k] - b[k]).norm()) for k in keys)
    # the test can tell: training moved the weights > 1e4x further than the two runs are apart
    assert moved > 0.1, moved
    assert gap < 1e-4 * moved, (gap, moved)
    for k in keys:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    # the curve (loss terms averaged over ranks) is the 1-process curve
    assert [r["step"] for r in one.curve_] == [r["step"] for r in two["curve"]]
    for r1, r2 in zip(one.curve_, two["curve"]):
        for term in one.module_.loss_terms:
            assert r2[term] == pytest.approx(r1[term], rel=1e-4, abs=1e-6), (r1["step"], term)


def test_batch_statistics_differ_between_local_and_global_batches():
    """What the gathering is for: SIGReg and the Barlow Twins loss of two half batches are not those of
    the whole batch (so per-rank statistics would change training)."""
    from scjepa.models.sigreg import SIGReg

    g = torch.Generator().manual_seed(0)
    e = torch.randn(2, BATCH, 8, generator=g) * 1.5 + 0.3
    s = SIGReg(16)
    d = s.directions(8, torch.Generator().manual_seed(1))
    whole = float(s(e, directions=d))
    halves = [float(s(part, directions=d)) for part in e.split(BATCH // 2, dim=1)]
    assert abs(whole - sum(halves) / 2) > 0.05 * whole


# ---- the workflow's path: pretrain() on a store, launched by torchrun --------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from scjepa.data.store import build_store

    d = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(3)
    n, g = 1600, 120
    X = sp.random(n, g, density=0.3, format="csr", dtype=np.float32, random_state=4)
    X.data[:] = np.log1p(rng.poisson(3, X.nnz) + 1).astype(np.float32)
    obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice(list("abcd"), n)),
                        "split": pd.Categorical(np.where(np.arange(n) < 1400, "train", "val"))},
                       index=[f"c{i}" for i in range(n)])
    path = d / "p.h5ad"
    ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)])).write_h5ad(path)
    build_store(path, d / "store", shard_size=256, progress=False)
    return path, d / "store"


def pretrain_kwargs(store, out: Path, **over) -> dict:
    path, store_dir = store
    hp = {"family": "scjepa", **TINY, **FAMILY_HP["scjepa"], "hidden": [256, 128], "batch_size": 64,
          "max_epochs": 2, "checkpoint_every": 4, "val_every": 4, "device": "cpu", "head_hidden": [16], **over}
    return dict(hparams=hp, store_dir=str(store_dir), val_h5ad=str(path), out_dir=str(out), seed=0,
                method_name="scjepa", num_threads=2)


def encoder(model_dir) -> dict:
    return torch.load(Path(model_dir) / "encoder.pt", weights_only=True)


def _kill_tree(pid: int) -> None:
    import psutil

    parent = psutil.Process(pid)
    procs = [parent, *parent.children(recursive=True)]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def test_pretrain_on_two_ranks_matches_one_process_and_resumes_after_kill(store, tmp_path):
    from scjepa.methods import pretrain
    from scjepa.methods.distributed import launch
    from scjepa.methods.engine import CHECKPOINT, CURVE

    # 1 process against 2 ranks, 12 steps: longer runs drift apart as any two float orders of summation
    # do (relative 1e-7 after 8 steps, 1e-3 after 42: the training trajectory amplifies round-off)
    short = dict(max_steps=12)
    two = pretrain_kwargs(store, tmp_path / "two" / "model", **short)
    t = time.perf_counter()
    launch(2, two)
    t_two = time.perf_counter() - t
    one = pretrain_kwargs(store, tmp_path / "one" / "model", **short)
    t = time.perf_counter()
    pretrain(**{**one, "num_threads": 1})
    t_one = time.perf_counter() - t
    a, b = encoder(one["out_dir"]), encoder(two["out_dir"])
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    curve = [r.split(",") for r in (Path(two["out_dir"]) / CURVE).read_text().splitlines()]
    assert curve[0][:5] == ["step", "epoch", "loss", "sim", "sigreg"] and curve[-1][0] == "12"
    assert all(r[-1] for r in curve[1:] if r[0] in ("4", "8", "12"))  # rank 0's val kNN scores

    # a longer 2-rank run, uninterrupted; the same killed (every process, SIGKILL) once it has written a
    # checkpoint, then started again
    full = pretrain_kwargs(store, tmp_path / "full" / "model")
    launch(2, full)

    # the same 2-rank run, killed (every process, SIGKILL) once it has written a checkpoint, then rerun
    cut = pretrain_kwargs(store, tmp_path / "cut" / "model")
    work = tmp_path / "cut" / ".model.work"
    spec = tmp_path / "cut.json"
    spec.write_text(json.dumps(cut))
    code = "import json, sys; from scjepa.methods.distributed import launch; launch(2, json.load(open(sys.argv[1])))"
    proc = subprocess.Popen([sys.executable, "-c", code, str(spec)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while not (work / CURVE).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    _kill_tree(proc.pid)
    assert (work / CHECKPOINT).exists(), proc.stderr.read().decode()[-3000:]
    ckpt = torch.load(work / CHECKPOINT, weights_only=False)
    assert not ckpt["finished"], "the run ended before it was killed: make it longer"
    assert not Path(cut["out_dir"]).exists()
    launch(2, cut)
    resumed, uninterrupted = encoder(cut["out_dir"]), encoder(full["out_dir"])
    for k in uninterrupted:
        assert torch.equal(resumed[k], uninterrupted[k]), k
    print(f"\n2 ranks (torchrun, incl. start-up) {t_two:.1f} s, 1 process {t_one:.1f} s")


if __name__ == "__main__":
    _ranks_main(sys.argv[1])
