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


def _expected_shards(X, codes, split_col, splits, shard_size, seed):
    """The store's cell-to-shard assignment, computed directly from the in-memory matrix (the
    single-pass algorithm the two-pass build replaced)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in splits:
        rows = np.flatnonzero(split_col == split)
        rows = rows[rng.permutation(len(rows))]
        out[split] = [(X[rows[s : s + shard_size]].toarray(), codes[rows[s : s + shard_size]])
                      for s in range(0, len(rows), shard_size)]
    return out


@pytest.fixture()
def processed_uneven(tmp_path):
    """1,003 cells (not a multiple of any chunk or shard size), some all-zero rows, three splits."""
    rng = np.random.default_rng(5)
    n, g = 1003, 40
    X = sp.random(n, g, density=0.15, format="csr", dtype=np.float32, random_state=2)
    X.data[:] = rng.random(X.nnz, dtype=np.float32) + 0.5
    X = X.tolil()
    X[[0, 17, 500, 1002]] = 0  # empty rows must keep their place
    X = X.tocsr()
    X.eliminate_zeros()
    split = rng.choice(["train", "val", "test"], n, p=[0.7, 0.2, 0.1])
    obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice(list("abcd"), n)), "split": pd.Categorical(split)},
                       index=[f"c{i}" for i in range(n)])
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    path = tmp_path / "uneven.h5ad"
    a.write_h5ad(path)
    return path, a


@pytest.mark.parametrize("chunk_size", [None, 97, 5000])
def test_two_pass_build_matches_direct_assignment(processed_uneven, tmp_path, chunk_size):
    """Chunked scatter + per-shard finalise gives exactly the shards (rows, order, labels) of dealing
    the in-memory matrix: training results do not depend on how the store was built."""
    path, a = processed_uneven
    shard_size, seed = 64, 11
    out = tmp_path / "store"
    meta = build_store(path, out, shard_size=shard_size, seed=seed, chunk_size=chunk_size, progress=False)
    codes = a.obs["cell_type"].cat.codes.to_numpy().astype(np.int64)
    want = _expected_shards(a.X, codes, a.obs["split"].astype(str).to_numpy(), ("train", "val"), shard_size, seed)
    for split in ("train", "val"):
        shards = meta["splits"][split]["shards"]
        assert len(shards) == len(want[split]) > 1
        assert meta["splits"][split]["n_cells"] == sum(len(y) for _, y in want[split])
        for i, (sh, (wx, wy)) in enumerate(zip(shards, want[split])):
            assert sh == {"file": f"{split}/shard_{i:05d}.npz", "n": len(wy)}
            with np.load(out / sh["file"]) as z:
                assert sorted(z.files) == ["data", "indices", "indptr", "labels", "shape"]
                assert z["data"].dtype == np.float32 and z["labels"].dtype == np.int64
                m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
                np.testing.assert_array_equal(m.toarray(), wx)
                np.testing.assert_array_equal(z["labels"], wy)
    # nothing else in the store: the temporary pieces are gone
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    shard_files = [sh["file"] for s in ("train", "val") for sh in meta["splits"][s]["shards"]]
    assert files == sorted(["genes.txt", "meta.json", "train", "val", *shard_files])
    assert (out / "genes.txt").read_text().split() == list(a.var_names)
    assert meta["classes"] == ["a", "b", "c", "d"] and meta["n_genes"] == 40


def test_failed_build_leaves_nothing(processed_uneven, tmp_path, monkeypatch):
    """A build that dies mid-way (here: in pass 2) leaves neither the store nor its temporary pieces."""
    path, _ = processed_uneven
    calls = []

    def boom(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(*args, **kw)

    real = np.savez
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        build_store(path, tmp_path / "out" / "store", shard_size=64, chunk_size=100, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_sizes_rejected(processed_uneven, tmp_path):
    path, _ = processed_uneven
    with pytest.raises(ValueError, match="chunk_size"):
        build_store(path, tmp_path / "store", shard_size=64, chunk_size=0, progress=False)


def test_missing_or_unusable_input_is_an_input_error(processed_uneven, tmp_path):
    path, _ = processed_uneven
    with pytest.raises(InputError, match="does not exist"):
        build_store(tmp_path / "nope.h5ad", tmp_path / "store", progress=False)
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="truncated or corrupt"):
        build_store(bad, tmp_path / "store", progress=False)
    with pytest.raises(InputError, match="label column missing"):
        build_store(path, tmp_path / "store", label_column="tissue", progress=False)
    assert not (tmp_path / "store").exists()
