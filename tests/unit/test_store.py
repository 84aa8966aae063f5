"""The sharded training store and its loaders."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scjepa.data.store import ArrayLoader, CSRBatch, StoreLoader, build_store, densify
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


# ---- the loader: order, workers, CSR batches, ranks ----------------------------------------------

def _reference_batches(store_dir, batch_size, seed, epoch, buffer_shards, shuffle=True, drop_last=True):
    """The loader's order as the single-threaded, fully-loaded implementation it replaced computed it
    (shards read whole, stacked per buffer, leftover rows carried into the next buffer)."""
    import json

    meta = json.loads((store_dir / "meta.json").read_text())
    shards = meta["splits"]["train"]["shards"]

    def load(f):
        with np.load(store_dir / f) as z:
            return sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"])), z["labels"]

    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(shards)) if shuffle else np.arange(len(shards))
    carry, out = None, []
    for g in range(0, len(order), buffer_shards):
        parts = [load(shards[i]["file"]) for i in order[g : g + buffer_shards]]
        if carry is not None:
            parts.insert(0, carry)
        X = sp.vstack([p[0] for p in parts], format="csr")
        y = np.concatenate([p[1] for p in parts])
        perm = rng.permutation(X.shape[0]) if shuffle else np.arange(X.shape[0])
        n_full = (len(perm) // batch_size) * batch_size
        if g + buffer_shards < len(order) and n_full < len(perm):
            carry, perm = (X[perm[n_full:]], y[perm[n_full:]]), perm[:n_full]
        else:
            carry = None
        for s in range(0, len(perm), batch_size):
            idx = perm[s : s + batch_size]
            if len(idx) < batch_size and drop_last:
                break
            out.append((X[idx].toarray(), y[idx]))
    return out


@pytest.fixture()
def store_uneven(processed_uneven, tmp_path):
    path, _ = processed_uneven
    build_store(path, tmp_path / "store", shard_size=64, progress=False)  # 11 train shards, the last short
    return tmp_path / "store"


@pytest.mark.parametrize("kw", [
    dict(batch_size=50, seed=3, buffer_shards=2, workers=3),
    dict(batch_size=37, seed=1, buffer_shards=3, drop_last=False, workers=2, sparse=True),
    dict(batch_size=40, seed=2, buffer_shards=1, prefetch=0),  # built in the caller's thread
    dict(batch_size=64, seed=0, buffer_shards=4, shuffle=False, workers=4, sparse=True, prefetch=1),
])
def test_loader_order_is_the_reference_order(store_uneven, kw):
    """Every batch, in order, as the former implementation produced it, whatever the number of worker
    threads, for dense and CSR batches: a seed gives the same training as before."""
    L = StoreLoader(store_uneven, **kw)
    for epoch in (0, 1):
        L.set_epoch(epoch)
        want = _reference_batches(store_uneven, kw["batch_size"], kw["seed"], epoch, kw["buffer_shards"],
                                  kw.get("shuffle", True), kw.get("drop_last", True))
        got = list(L)
        assert len(got) == len(want) == len(L)
        for b, (wx, wy) in zip(got, want):
            x = b["x"].to_dense() if kw.get("sparse") else b["x"]
            assert x.dtype == torch.float32 and b["y"].dtype == torch.int64
            np.testing.assert_array_equal(x.numpy(), wx)
            np.testing.assert_array_equal(b["y"].numpy(), wy)


def test_skip_resumes_exactly_with_workers(store_uneven):
    full = [b["x"].clone() for b in StoreLoader(store_uneven, batch_size=30, seed=4, workers=3)]
    L = StoreLoader(store_uneven, batch_size=30, seed=4, workers=3)
    L.skip(9)  # past the first buffer: its shards are never read
    rest = [b["x"].clone() for b in L]
    assert len(rest) == len(full) - 9 > 0
    assert all(torch.equal(x, y) for x, y in zip(full[9:], rest))


def test_worker_errors_surface_and_early_exit_stops(store_uneven):
    L = StoreLoader(store_uneven, batch_size=30, seed=0, workers=2)
    it = iter(L)
    next(it)
    it.close()  # a consumer that stops early (max_steps): pending work is dropped, nothing hangs
    (store_uneven / L.shards[0]["file"]).write_bytes(b"not a zip")
    L2 = StoreLoader(store_uneven, batch_size=30, seed=0, workers=2, shuffle=False)
    with pytest.raises(Exception, match="zip"):
        list(L2)


def test_compressed_shards_are_read_too(store_uneven):
    """Shards whose members cannot be memory-mapped (np.savez_compressed) give the same batches."""
    want = [b["x"].clone() for b in StoreLoader(store_uneven, batch_size=32, seed=5)]
    for f in (store_uneven / "train").glob("*.npz"):
        with np.load(f) as z:
            arrays = {k: z[k] for k in z.files}
        np.savez_compressed(f, **arrays)
    got = [b["x"] for b in StoreLoader(store_uneven, batch_size=32, seed=5, workers=2)]
    assert len(got) == len(want) and all(torch.equal(x, y) for x, y in zip(got, want))


def test_csr_batch_densifies_exactly():
    rng = np.random.default_rng(0)
    m = sp.random(40, 25, density=0.3, format="csr", dtype=np.float32, random_state=1)
    m.data[:] = rng.normal(size=m.nnz).astype(np.float32)
    m = m.tolil()
    m[5] = 0  # an empty row
    m = m.tocsr()
    b = CSRBatch.from_scipy(m)
    assert len(b) == 40 and b.shape == (40, 25)
    assert b.nbytes == 8 * 41 + 8 * m.nnz  # int64 row pointers; int32 indices + float32 values
    dense = b.to_dense()
    assert dense.dtype == torch.float32 and np.array_equal(dense.numpy(), m.toarray())
    assert torch.equal(densify({"x": b, "y": torch.arange(3)})["x"], dense)
    # duplicates (not canonical CSR) add up, as scipy's toarray adds them
    dup = CSRBatch(torch.tensor([0, 2, 3]), torch.tensor([1, 1, 0], dtype=torch.int32), torch.tensor([1.0, 2.0, 4.0]),
                   (2, 3))
    assert dense_equal(dup.to_dense(), [[0, 3, 0], [4, 0, 0]])


def dense_equal(t, rows):
    return torch.equal(t, torch.tensor(rows, dtype=torch.float32))


def test_ranks_split_each_global_batch(store_uneven):
    """Rank r of W yields the r-th contiguous part of every global batch: together the ranks see
    exactly the 1-process batches, and no cell twice."""
    one = list(StoreLoader(store_uneven, batch_size=40, seed=6, sparse=True))
    parts = [list(StoreLoader(store_uneven, batch_size=40, seed=6, sparse=True, rank=r, world_size=4))
             for r in range(4)]
    assert all(len(p) == len(one) for p in parts)
    for k, b in enumerate(one):
        joined = torch.cat([p[k]["x"].to_dense() for p in parts])
        assert torch.equal(joined, b["x"].to_dense())
        assert torch.equal(torch.cat([p[k]["y"] for p in parts]), b["y"])
    with pytest.raises(InputError, match="multiple"):
        StoreLoader(store_uneven, batch_size=42, rank=0, world_size=4)
    with pytest.raises(InputError, match="rank"):
        ArrayLoader(np.eye(8), batch_size=4, rank=2, world_size=2)
