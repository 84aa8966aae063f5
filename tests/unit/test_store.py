"""The sharded training store and its loaders."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scjepa.data.store import ArrayLoader, StoreLoader, build_store
from scjepa.errors import InputError


@pytest.fixture()
def processed(tmp_path):
    rng = np.random.default_rng(0)
    n, g = 1000, 30
    X = sp.random(n, g, density=0.2, format="csr", dtype=np.float32, random_state=1)
    X.data[:] = np.arange(X.nnz) % 7 + 1
    obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice(list("abc"), n)),
                        "split": pd.Categorical(np.where(np.arange(n) < 800, "train", np.where(np.arange(n) < 900, "val", "test")))},
                       index=[f"c{i}" for i in range(n)])
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    path = tmp_path / "p.h5ad"
    a.write_h5ad(path)
    return path, a


def test_store_roundtrip_every_cell_once(processed, tmp_path):
    path, a = processed
    meta = build_store(path, tmp_path / "store", shard_size=64, progress=False)
    assert meta["splits"]["train"]["n_cells"] == 800 and meta["splits"]["val"]["n_cells"] == 100
    loader = StoreLoader(tmp_path / "store", batch_size=50, seed=3, drop_last=False, buffer_shards=2)
    xs, ys = [], []
    for b in loader:
        assert b["x"].dtype == torch.float32 and b["y"].dtype == torch.int64
        xs.append(b["x"].numpy()); ys.append(b["y"].numpy())
    X = np.concatenate(xs)
    assert X.shape == (800, 30)
    # same multiset of rows as the train split
    want = a.X[:800].toarray()
    key = lambda M: np.sort(M @ np.arange(1, 31) + M.sum(1) * 1000)
    np.testing.assert_allclose(key(X), key(want))
    codes = a.obs["cell_type"].cat.codes.to_numpy()[:800]
    assert np.bincount(np.concatenate(ys)).tolist() == np.bincount(codes).tolist()


def test_epoch_order_is_deterministic_and_changes_with_epoch(processed, tmp_path):
    path, _ = processed
    build_store(path, tmp_path / "store", shard_size=64, progress=False)
    L = StoreLoader(tmp_path / "store", batch_size=40, seed=1)
    first = [b["y"].clone() for b in L]
    again = [b["y"].clone() for b in L]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    L.set_epoch(1)
    other = [b["y"].clone() for b in L]
    assert not all(torch.equal(x, y) for x, y in zip(first, other))
    assert len(first) == len(L) == 800 // 40


def test_skip_resumes_exactly(processed, tmp_path):
    path, _ = processed
    build_store(path, tmp_path / "store", shard_size=64, progress=False)
    L = StoreLoader(tmp_path / "store", batch_size=40, seed=1)
    full = [b["x"].clone() for b in L]
    L.skip(7)
    rest = [b["x"].clone() for b in L]
    assert len(rest) == len(full) - 7
    assert all(torch.equal(x, y) for x, y in zip(full[7:], rest))


def test_incomplete_store_is_rejected(tmp_path):
    (tmp_path / "store").mkdir()
    with pytest.raises(InputError, match="meta.json"):
        StoreLoader(tmp_path / "store")


def test_array_loader_interface():
    X = np.eye(10, dtype=np.float32)
    L = ArrayLoader(X, np.arange(10) % 2, batch_size=4, seed=0)
    batches = list(L)
    assert len(batches) == len(L) == 2
    assert L.n_genes == 10 and L.classes == ["0", "1"]
