"""The pretraining store: the corpus written once as CSR shards, streamed in shuffled mini-batches.

Layout of ``results/store/{corpus}/``::

    meta.json                 n_genes, classes, per split: n_cells and the shard list (written last)
    genes.txt                 gene ids, one per line (the corpus gene space)
    {split}/shard_00000.npz   CSR arrays (data, indices, indptr, shape) + labels (int64 codes)

Cells are dealt to shards in a seeded random order, so each shard is a random sample of the
corpus; the loader then shuffles shard order and rows within a buffer of ``buffer_shards`` shards
every epoch (the scheme of Merlin's ``parts_per_chunk`` used by scTab). Memory is bounded by
``buffer_shards * shard_size`` rows, never by the corpus. Why own CSR shards rather than a
zarr-backed AnnData or annbatch: see the README's design notes (measured in
``benchmarks/bench_data.py`` and ``benchmarks/bench_annbatch.py``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from scjepa.errors import InputError
from scjepa.io import atomic_path

log = logging.getLogger(__name__)


def build_store(
    processed_h5ad: str | Path,
    out_dir: str | Path,
    *,
    shard_size: int = 8192,
    splits: Sequence[str] = ("train", "val"),
    label_column: str = "cell_type",
    seed: int = 0,
    chunk_size: int | None = None,
    progress: bool = True,
) -> dict:
    """Write the store from a processed dataset, in memory bounded by one chunk and one shard.

    Cells are dealt to shards as ``rng = default_rng(seed)``; per split, its rows in the permuted
    order ``rows[rng.permutation(len(rows))]`` cut into ``shard_size`` runs. Two passes:

    1. read the file (backed) in contiguous chunks of ``chunk_size`` rows (default ``shard_size``)
       and append every row to the on-disk pieces of its destination shard (in the temporary
       directory), in file order;
    2. per shard, read its pieces back, put its rows in the shuffled order and write the shard.

    The shards are the same, array for array, as those of the former one-pass build, which read each
    shard with one fancy-indexed read of ``anndata.read_h5ad(backed="r")``: that read spans the
    shard's first to last row (most of the file for a random sample; 5x slower at 1M cells), and
    opening the file that way loads ``layers`` and obs whole (3.6 GB peak at 1M cells x 2,000 genes,
    ``benchmarks/RESULTS.md``). Memory here is one chunk, one shard and a few bytes per cell (label
    and split codes, the shard assignment): 415 MB at 1M x 2,000, 0.7 GB at 1M x 19,331.
    """
    from tqdm.auto import tqdm

    shard_size = int(shard_size)
    chunk_size = shard_size if chunk_size is None else int(chunk_size)
    if shard_size < 1 or chunk_size < 1:
        raise ValueError(f"shard_size and chunk_size must be >= 1 (got {shard_size}, {chunk_size})")
    processed_h5ad, out_dir = Path(processed_h5ad), Path(out_dir)
    src = _BackedX(processed_h5ad)
    try:
        if label_column not in src.columns:
            raise InputError("label column missing", path=processed_h5ad, column=label_column)
        if "split" not in src.columns:
            raise InputError("no 'split' column: was it preprocessed?", path=processed_h5ad, column="split")
        labels = src.obs_column(label_column).astype("category")
        classes = [str(c) for c in labels.cat.categories]
        codes = labels.cat.codes.to_numpy().astype(np.int64)
        # split membership through category codes: no per-cell Python strings
        split_cat = src.obs_column("split").astype("category")
        split_codes = split_cat.cat.codes.to_numpy()
        split_names = [str(c) for c in split_cat.cat.categories]
        n_obs, n_genes = src.shape
        meta = {"n_genes": n_genes, "classes": classes, "label_column": label_column,
                "shard_size": shard_size, "seed": int(seed), "source": str(processed_h5ad), "splits": {}}

        # the assignment: shard s = (split, i, rows in shuffled order); dest[row] = s (-1: no split)
        rng = np.random.default_rng(seed)
        plan: list[tuple[str, int, np.ndarray]] = []
        dest = np.full(n_obs, -1, dtype=np.int32 if n_obs < 2**31 else np.int64)
        for split in splits:
            match = [j for j, name in enumerate(split_names) if name == split]
            rows = np.flatnonzero(np.isin(split_codes, match))
            rows = rows[rng.permutation(len(rows))]
            shards = []
            for i, start in enumerate(range(0, len(rows), shard_size)):
                idx = rows[start : start + shard_size]
                dest[idx] = len(plan)
                plan.append((split, i, idx))
                shards.append({"file": f"{split}/shard_{i:05d}.npz", "n": int(len(idx))})
            meta["splits"][split] = {"n_cells": int(len(rows)), "shards": shards}
        n_assigned = sum(len(idx) for _, _, idx in plan)

        with atomic_path(out_dir, is_dir=True) as tmp:
            (tmp / "genes.txt").write_text("\n".join(map(str, src.var_names())) + "\n")
            pieces = tmp / ".pieces"
            pieces.mkdir()

            # pass 1: contiguous chunks, rows scattered to their shard's pieces (file order kept)
            bar = tqdm(total=n_obs, desc="store: scatter", unit="cells", disable=not progress)
            for start in range(0, n_obs, chunk_size):
                end = min(start + chunk_size, n_obs)
                d = dest[start:end]
                keep = np.flatnonzero(d >= 0)
                if len(keep):
                    order = keep[np.argsort(d[keep], kind="stable")]  # by shard, file order within
                    block = sp.csr_matrix(src.X[start:end])[order]
                    data = block.data.astype(np.float32, copy=False)
                    indices = block.indices.astype(np.int32, copy=False)
                    nnz = np.diff(block.indptr).astype(np.int32)
                    ids, first = np.unique(d[order], return_index=True)
                    bounds = np.append(first, len(order))
                    for s, a, b in zip(ids, bounds[:-1], bounds[1:]):
                        lo, hi = block.indptr[a], block.indptr[b]
                        _append(pieces / f"{s}.data", data[lo:hi])
                        _append(pieces / f"{s}.indices", indices[lo:hi])
                        _append(pieces / f"{s}.nnz", nnz[a:b])
                bar.update(end - start)
            bar.close()

            # pass 2: one shard at a time, rows back in the shuffled order
            for split in splits:
                (tmp / split).mkdir()
            bar = tqdm(total=n_assigned, desc="store: shards", unit="cells", disable=not progress)
            for s, (split, i, idx) in enumerate(plan):
                nnz = np.fromfile(pieces / f"{s}.nnz", dtype=np.int32)
                if len(nnz) != len(idx):
                    raise RuntimeError(f"shard {split}/{i}: {len(nnz)} rows in its pieces, expected {len(idx)}")
                indptr = np.zeros(len(idx) + 1, dtype=np.int64)
                np.cumsum(nnz, out=indptr[1:])
                block = sp.csr_matrix((np.fromfile(pieces / f"{s}.data", dtype=np.float32),
                                       np.fromfile(pieces / f"{s}.indices", dtype=np.int32), indptr),
                                      shape=(len(idx), n_genes))
                order = np.argsort(idx)  # the pieces hold the shard's rows in file (= sorted) order
                inv = np.empty_like(order)
                inv[order] = np.arange(len(order))
                block = block[inv]  # back to the shuffled order
                np.savez(tmp / f"{split}/shard_{i:05d}.npz", data=block.data, indices=block.indices,
                         indptr=block.indptr, shape=np.asarray(block.shape), labels=codes[idx])
                for ext in ("nnz", "data", "indices"):
                    (pieces / f"{s}.{ext}").unlink()
                bar.update(len(idx))
            bar.close()
            pieces.rmdir()
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        return meta
    finally:
        src.close()


class _BackedX:
    """A processed h5ad opened for the store: ``X`` backed (sliced by rows), obs columns and var names
    read one by one on demand.

    Not ``anndata.read_h5ad(backed="r")``: that backs only X and reads everything else whole, including
    ``layers["counts"]`` (as large as X: 3 GB at 1M cells x 2,000 genes) and the obs index.
    """

    def __init__(self, path: Path):
        import h5py

        try:
            from anndata.io import read_elem, sparse_dataset
        except ImportError:  # anndata < 0.11
            from anndata.experimental import read_elem, sparse_dataset
        self.path, self._read_elem = path, read_elem
        if not path.exists():
            raise InputError("does not exist", path=path)
        try:
            self.file = h5py.File(path, "r")
        except Exception as exc:
            raise InputError(f"cannot be read as h5ad ({type(exc).__name__}: {exc}); is it truncated or corrupt?",
                             path=path) from exc
        try:
            x = self.file["X"]
            self.X = sparse_dataset(x) if isinstance(x, h5py.Group) else x
            self.shape = tuple(int(v) for v in self.X.shape)
            self.columns = [str(c) for c in self.file["obs"].attrs.get("column-order", [])]
        except Exception as exc:
            self.file.close()
            raise InputError(f"cannot be read as h5ad ({type(exc).__name__}: {exc}); is it truncated or corrupt?",
                             path=path) from exc

    def obs_column(self, name: str):
        import pandas as pd

        return pd.Series(self._read_elem(self.file["obs"][name]))

    def var_names(self):
        var = self.file["var"]
        return self._read_elem(var[var.attrs["_index"]])

    def close(self) -> None:
        self.file.close()


def _append(path: Path, arr: np.ndarray) -> None:
    """Append raw bytes (opened per call: the number of shards does not bound open files)."""
    with open(path, "ab") as fh:
        arr.tofile(fh)


def _load_shard(path: Path) -> tuple[sp.csr_matrix, np.ndarray]:
    with np.load(path) as z:
        m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        return m, z["labels"]


class _Batches:
    """Common epoch bookkeeping of the loaders: ``set_epoch``, ``skip``, ``len``."""

    batch_size: int
    drop_last: bool
    n_cells: int

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, n_batches: int) -> None:
        """Skip the first ``n_batches`` of the next iteration (exact mid-epoch resume)."""
        self._skip = int(n_batches)

    def __len__(self) -> int:
        if self.drop_last:
            return self.n_cells // self.batch_size
        return -(-self.n_cells // self.batch_size)

    def _emit(self, X: sp.csr_matrix, y: np.ndarray, perm: np.ndarray, skip: list[int]) -> Iterator[dict]:
        """Batches of ``perm``; the first ``skip[0]`` batches (shared across calls) are passed over
        without densifying them."""
        for start in range(0, len(perm), self.batch_size):
            idx = perm[start : start + self.batch_size]
            if len(idx) < self.batch_size and self.drop_last:
                return
            if skip[0] > 0:
                skip[0] -= 1
                continue
            yield {"x": torch.from_numpy(X[idx].toarray()), "y": torch.from_numpy(y[idx])}


class StoreLoader(_Batches):
    """Iterate shuffled mini-batches ``{"x": float32 (B, D), "y": int64 (B,)}`` from a store split.

    The order of an epoch is a function of ``(seed, epoch)`` alone, so a resumed run sees exactly
    the batches an uninterrupted one would. Shards are read and densified in a background thread
    (``prefetch`` batches ahead), so disk and decompression overlap the training step.
    """

    def __init__(self, store_dir, batch_size: int = 1024, *, shuffle: bool = True, seed: int = 0,
                 split: str = "train", drop_last: bool = True, buffer_shards: int = 4, prefetch: int = 4):
        self.store_dir = Path(store_dir)
        meta_path = self.store_dir / "meta.json"
        if not meta_path.exists():
            raise InputError("is not a complete training store (no meta.json)", path=self.store_dir)
        self.meta = json.loads(meta_path.read_text())
        if split not in self.meta["splits"]:
            raise InputError(f"store has no split '{split}' (has {list(self.meta['splits'])})", path=self.store_dir)
        self.split, self.batch_size, self.shuffle, self.seed = split, int(batch_size), shuffle, int(seed)
        self.drop_last, self.buffer_shards, self.prefetch = drop_last, max(1, buffer_shards), prefetch
        self.shards = self.meta["splits"][split]["shards"]
        self.n_cells = int(self.meta["splits"][split]["n_cells"])
        self.n_genes = int(self.meta["n_genes"])
        self.classes = list(self.meta["classes"])
        self.gene_ids = (self.store_dir / "genes.txt").read_text().split()
        self.epoch, self._skip = 0, 0
        if self.n_cells < self.batch_size and drop_last:
            raise InputError(f"split '{split}' has {self.n_cells} cells, fewer than one batch of "
                             f"{self.batch_size}", path=self.store_dir)

    def _generate(self, skip: list[int]) -> Iterator[dict]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.shards)) if self.shuffle else np.arange(len(self.shards))
        carry_X, carry_y = None, None
        for g in range(0, len(order), self.buffer_shards):
            parts = [_load_shard(self.store_dir / self.shards[i]["file"]) for i in order[g : g + self.buffer_shards]]
            Xs = [p[0] for p in parts]
            ys = [p[1] for p in parts]
            if carry_X is not None:
                Xs.insert(0, carry_X)
                ys.insert(0, carry_y)
            X = sp.vstack(Xs, format="csr")
            y = np.concatenate(ys)
            perm = rng.permutation(X.shape[0]) if self.shuffle else np.arange(X.shape[0])
            last_group = g + self.buffer_shards >= len(order)
            n_full = (len(perm) // self.batch_size) * self.batch_size
            if not last_group and n_full < len(perm):
                rest = perm[n_full:]
                carry_X, carry_y = X[rest], y[rest]  # leftover rows join the next buffer
                perm = perm[:n_full]
            else:
                carry_X = carry_y = None
            yield from self._emit(X, y, perm, skip)

    def __iter__(self) -> Iterator[dict]:
        skip, self._skip = [self._skip], 0
        gen = self._generate(skip)
        if self.prefetch <= 0:
            yield from gen
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        sentinel = object()

        def work():
            try:
                for b in gen:
                    if stop.is_set():
                        return
                    q.put(b)
            except BaseException as exc:  # surface loader errors in the training loop
                q.put(exc)
            q.put(sentinel)

        t = threading.Thread(target=work, daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is sentinel:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while t.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    t.join(timeout=0.05)


class ArrayLoader(_Batches):
    """In-memory loader with the StoreLoader interface (tests, small data, fine-tuning)."""

    def __init__(self, X, y=None, batch_size: int = 256, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, classes: Sequence[str] | None = None, gene_ids=None):
        self.X = sp.csr_matrix(X, dtype=np.float32)
        n = self.X.shape[0]
        self.y = np.full(n, -1, dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64)
        self.batch_size, self.shuffle, self.seed, self.drop_last = int(batch_size), shuffle, int(seed), drop_last
        self.n_cells, self.n_genes = n, self.X.shape[1]
        self.classes = list(classes) if classes is not None else [str(c) for c in range(int(self.y.max()) + 1)]
        self.gene_ids = list(gene_ids) if gene_ids is not None else None
        self.epoch, self._skip = 0, 0

    def __iter__(self) -> Iterator[dict]:
        skip, self._skip = [self._skip], 0
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(self.n_cells) if self.shuffle else np.arange(self.n_cells)
        yield from self._emit(self.X, self.y, perm, skip)
