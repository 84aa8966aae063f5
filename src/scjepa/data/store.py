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
``benchmarks/bench_store.py``).
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
from scjepa.io import atomic_path, read_h5ad

log = logging.getLogger(__name__)


def build_store(
    processed_h5ad: str | Path,
    out_dir: str | Path,
    *,
    shard_size: int = 8192,
    splits: Sequence[str] = ("train", "val"),
    label_column: str = "cell_type",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Write the store from a processed dataset (read backed: memory bounded by one shard)."""
    from tqdm.auto import tqdm

    processed_h5ad, out_dir = Path(processed_h5ad), Path(out_dir)
    adata = read_h5ad(processed_h5ad, backed="r")
    try:
        if label_column not in adata.obs:
            raise InputError("label column missing", path=processed_h5ad, column=label_column)
        if "split" not in adata.obs:
            raise InputError("no 'split' column: was it preprocessed?", path=processed_h5ad, column="split")
        labels = adata.obs[label_column].astype("category")
        classes = [str(c) for c in labels.cat.categories]
        codes = labels.cat.codes.to_numpy().astype(np.int64)
        split_col = adata.obs["split"].astype(str).to_numpy()
        meta = {"n_genes": int(adata.n_vars), "classes": classes, "label_column": label_column,
                "shard_size": int(shard_size), "seed": int(seed), "source": str(processed_h5ad), "splits": {}}
        rng = np.random.default_rng(seed)
        with atomic_path(out_dir, is_dir=True) as tmp:
            (tmp / "genes.txt").write_text("\n".join(map(str, adata.var_names)) + "\n")
            for split in splits:
                rows = np.flatnonzero(split_col == split)
                rows = rows[rng.permutation(len(rows))]
                (tmp / split).mkdir()
                shards = []
                bar = tqdm(total=len(rows), desc=f"store {split}", unit="cells", disable=not progress)
                for i, start in enumerate(range(0, len(rows), shard_size)):
                    idx = rows[start : start + shard_size]
                    order = np.argsort(idx)  # backed reads want increasing indices
                    block = adata.X[idx[order]]
                    block = sp.csr_matrix(block, dtype=np.float32)
                    inv = np.empty_like(order)
                    inv[order] = np.arange(len(order))
                    block = block[inv]  # back to the shuffled order
                    name = f"{split}/shard_{i:05d}.npz"
                    np.savez(tmp / name, data=block.data, indices=block.indices, indptr=block.indptr,
                             shape=np.asarray(block.shape), labels=codes[idx])
                    shards.append({"file": name, "n": int(len(idx))})
                    bar.update(len(idx))
                bar.close()
                meta["splits"][split] = {"n_cells": int(len(rows)), "shards": shards}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        return meta
    finally:
        if getattr(adata, "file", None) is not None:
            adata.file.close()


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
