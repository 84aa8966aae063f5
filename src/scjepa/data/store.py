"""The pretraining store: the corpus written once as CSR shards, streamed in shuffled mini-batches.

Layout of ``results/store/{corpus}/``::

    meta.json                 n_genes, classes, per split: n_cells and the shard list (written last)
    genes.txt                 gene ids, one per line (the corpus gene space)
    {split}/shard_00000.npz   CSR arrays (data, indices, indptr, shape) + labels (int64 codes)

Cells are dealt to shards in a seeded random order, so each shard is a random sample of the
corpus; the loader then shuffles shard order and rows within a buffer of ``buffer_shards`` shards
every epoch (the scheme of Merlin's ``parts_per_chunk`` used by scTab). The loader memory-maps the
shards (at most ``2 * buffer_shards + 2`` at a time: page cache, shared by threads and by the ranks
of a multi-GPU run) and copies each batch's rows out of them, so its own memory is a few batches,
never the corpus. Batches leave it dense or as CSR (``CSRBatch``, ``sparse=True``), which the
training engine densifies on the device. Why own CSR shards rather than a zarr-backed AnnData or
annbatch: see the README's design notes (measured in ``benchmarks/bench_data.py``,
``benchmarks/bench_annbatch.py``; the CSR path at D = 19,331 in ``benchmarks/bench_loader.py``).
"""

from __future__ import annotations

import io
import json
import logging
import mmap
import os
import struct
import threading
import zipfile
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
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


# ---- mini-batches: CSR on the host, dense on the device ------------------------------------------


class CSRBatch:
    """A mini-batch of cells as CSR rows: the form in which batches leave the loaders (``sparse=True``).

    ``crow`` int64 (B + 1,) row pointers, ``col`` int32 (nnz,) gene indices, ``val`` float32 (nnz,)
    values; ``shape`` = (B, D). Host -> device volume per batch (``nbytes``): 8 (B + 1) + 8 nnz bytes,
    against 4 B D dense (at D = 19,331 and ~2,000 non-zeros per cell: ~16 kB against 77 kB per cell).
    ``to_dense`` runs on whichever device the batch is on, so the CPU and CUDA paths are one code path.
    """

    __slots__ = ("crow", "col", "val", "shape")

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape):
        self.crow, self.col, self.val = crow, col, val
        self.shape = (int(shape[0]), int(shape[1]))

    @classmethod
    def from_scipy(cls, m: sp.csr_matrix) -> "CSRBatch":
        return cls(torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int32)),
                   torch.from_numpy(m.data.astype(np.float32)), m.shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def device(self) -> torch.device:
        return self.val.device

    @property
    def nbytes(self) -> int:
        """Bytes of the three arrays: what a host -> device copy moves."""
        return sum(t.numel() * t.element_size() for t in (self.crow, self.col, self.val))

    def pin_memory(self) -> "CSRBatch":
        return CSRBatch(self.crow.pin_memory(), self.col.pin_memory(), self.val.pin_memory(), self.shape)

    def to(self, device, non_blocking: bool = False) -> "CSRBatch":
        return CSRBatch(*(t.to(device, non_blocking=non_blocking) for t in (self.crow, self.col, self.val)),
                        self.shape)

    def to_scipy(self) -> sp.csr_matrix:
        return sp.csr_matrix((self.val.numpy(), self.col.numpy(), self.crow.numpy()), shape=self.shape)

    def to_dense(self) -> torch.Tensor:
        """float32 (B, D) on the batch's device.

        Every stored value is added into a zero matrix (``index_put_(accumulate=True)``): each entry is
        0 + v = v exactly, so the result equals scipy's ``toarray()`` of the same rows bit for bit
        (duplicate entries, which canonical CSR does not have, are summed as ``toarray`` sums them).
        """
        B, D = self.shape
        dev = self.val.device
        counts = self.crow[1:] - self.crow[:-1]
        # output_size = nnz, known on the host: no device -> host synchronisation on CUDA
        rows = torch.repeat_interleave(torch.arange(B, device=dev), counts, output_size=self.col.numel())
        out = torch.zeros(B, D, dtype=self.val.dtype, device=dev)
        out.index_put_((rows, self.col.long()), self.val, accumulate=True)
        return out


def densify(batch: dict) -> dict:
    """The batch with every ``CSRBatch`` replaced by its dense (B, D) tensor (on the same device)."""
    return {k: (v.to_dense() if isinstance(v, CSRBatch) else v) for k, v in batch.items()}


# ---- shards, memory-mapped ----------------------------------------------------------------------

_MAP_FLAGS = getattr(mmap, "MAP_SHARED", 0) | getattr(mmap, "MAP_POPULATE", 0)


def _map_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The members of an uncompressed .npz (what ``np.savez`` writes) as read-only views of one mmap of
    the file; None when a member is compressed or not a plain array (then the caller reads the file).

    The map is populated at once (MAP_POPULATE, Linux): faulting the pages in one at a time as rows are
    read cost 1.7 us per 4 kB page, populating them 0.05 us (``benchmarks/RESULTS.md``). The views keep
    the map alive; dropping the last view unmaps it. Members are not aligned in the zip, which costs
    nothing here: rows are copied as contiguous slices (``StoreLoader._gather``).
    """
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
    if not infos or any(i.compress_type != zipfile.ZIP_STORED for i in infos):
        return None
    with open(path, "rb") as fh:
        if _MAP_FLAGS and hasattr(mmap, "PROT_READ"):
            mm = mmap.mmap(fh.fileno(), 0, flags=_MAP_FLAGS, prot=mmap.PROT_READ)
        else:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    out = {}
    for info in infos:
        h = info.header_offset
        if mm[h : h + 4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack_from("<HH", mm, h + 26)  # the local header's own lengths
        start = h + 30 + name_len + extra_len
        head = io.BytesIO(mm[start : start + min(info.file_size, 1 << 16)])
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
        else:
            return None
        if fortran or dtype.hasobject:
            return None
        count = int(np.prod(shape))
        out[info.filename.removesuffix(".npy")] = np.frombuffer(mm, dtype, count, start + head.tell()).reshape(shape)
    return out


def _read_shard(path: Path) -> dict[str, np.ndarray]:
    """A shard's arrays (data, indices, indptr, labels, shape): mapped, or read where it cannot be."""
    arrays = _map_npz(path)
    if arrays is None:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    return arrays


def _advise_willneed(path: Path) -> None:
    """Ask the kernel to start reading ``path`` into the page cache (returns at once; Linux)."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


_COPY_ROWS: list = []  # the compiled row copier, once per process (empty: not tried yet)


def _row_copier():
    """A compiled (numba, already a dependency through scanpy) loop copying CSR rows into a batch, run
    without the GIL: ``copy(data, indices, starts, lens, dst, out_data, out_indices)`` copies row i
    (``lens[i]`` entries from ``starts[i]``) to position ``dst[i]``. None where numba is missing.

    Why: the slice-by-slice copy (one numpy view per row) holds the GIL for much of its time (two
    threads of it ran 1.56x one thread where two processes ran 2.0x), which would cap the worker threads
    of a GPU node; this loop runs without it (``benchmarks/RESULTS.md``, "CSR loader"). One worker uses
    the slices (no numba import or compilation in the default 1-worker jobs); both give the same bytes.
    """
    if not _COPY_ROWS:
        try:
            import numba

            @numba.njit(nogil=True, cache=True)
            def copy_rows(data, indices, starts, lens, dst, out_data, out_indices):  # pragma: no cover (jit)
                for i in range(starts.shape[0]):  # one array at a time: two streams, not four
                    a, p, n = starts[i], dst[i], lens[i]
                    out_data[p : p + n] = data[a : a + n]
                for i in range(starts.shape[0]):
                    a, p, n = starts[i], dst[i], lens[i]
                    out_indices[p : p + n] = indices[a : a + n]

            _COPY_ROWS.append(copy_rows)
        except ImportError:
            _COPY_ROWS.append(None)
    return _COPY_ROWS[0]


class _ShardCache:
    """Shard index -> its arrays, at most ``capacity`` kept (least recently used dropped); thread-safe,
    and a shard several workers ask for at once is opened by one of them."""

    def __init__(self, paths: Sequence[Path], capacity: int):
        self.paths, self.capacity = list(paths), max(1, int(capacity))
        self._cache: OrderedDict[int, dict] = OrderedDict()
        self._opening: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def get(self, i: int) -> dict[str, np.ndarray]:
        while True:
            with self._lock:
                if i in self._cache:
                    self._cache.move_to_end(i)
                    return self._cache[i]
                ev = self._opening.get(i)
                owner = ev is None
                if owner:
                    ev = self._opening[i] = threading.Event()
            if not owner:
                ev.wait()
                continue  # opened (or failed: then this thread tries itself and raises the error)
            try:
                arrays = _read_shard(self.paths[i])
                with self._lock:
                    self._cache[i] = arrays
                    while len(self._cache) > self.capacity:
                        self._cache.popitem(last=False)
                return arrays
            finally:
                with self._lock:
                    self._opening.pop(i, None)
                ev.set()


# ---- loaders ------------------------------------------------------------------------------------


class _Batches:
    """What the loaders share: epoch bookkeeping (``set_epoch``, ``skip``, ``len``), the split of each
    global batch between data-parallel ranks, and the batch format (dense or ``CSRBatch``)."""

    batch_size: int
    drop_last: bool
    n_cells: int
    sparse: bool = False
    pin_memory: bool = False
    rank: int = 0
    world_size: int = 1

    def _set_format(self, sparse: bool, pin_memory: bool, rank: int, world_size: int) -> None:
        rank, world_size = int(rank), int(world_size)
        if world_size < 1 or not 0 <= rank < world_size:
            raise InputError(f"rank {rank} of world size {world_size}", key="rank")
        if world_size > 1 and (self.batch_size % world_size or not self.drop_last):
            raise InputError(f"with {world_size} ranks the (global) batch size must be a multiple of the number of "
                             f"ranks and drop_last on (got {self.batch_size}, drop_last={self.drop_last})",
                             key="batch_size")
        # pinned (page-locked) host memory exists only with CUDA; it is what makes the copy asynchronous
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self.sparse, self.rank, self.world_size = bool(sparse), rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, n_batches: int) -> None:
        """Skip the first ``n_batches`` of the next iteration (exact mid-epoch resume)."""
        self._skip = int(n_batches)

    def __len__(self) -> int:
        """Batches per epoch (global batches: every rank yields this many, each its share of every one)."""
        if self.drop_last:
            return self.n_cells // self.batch_size
        return -(-self.n_cells // self.batch_size)

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size

    def _rows(self, order: np.ndarray, k: int) -> np.ndarray:
        """This rank's rows of batch ``k`` of the epoch ``order``: rank r takes the r-th of
        ``world_size`` equal contiguous parts of the global batch (the whole batch with one rank)."""
        lo = k * self.batch_size
        if self.world_size == 1:
            return order[lo : lo + self.batch_size]
        lo += self.rank * self.local_batch_size
        return order[lo : lo + self.local_batch_size]

    def _finish(self, x: CSRBatch, y: torch.Tensor) -> dict:
        """The batch as yielded: x dense, or CSR; pinned when ``pin_memory`` (tensors already pinned,
        like the ones ``StoreLoader`` builds in pinned memory, are not copied again)."""
        if not self.sparse:
            # dense on the host exactly as before the sparse path: scipy's toarray, a numpy buffer
            x = torch.from_numpy(x.to_scipy().toarray())
            return {"x": x.pin_memory(), "y": y.pin_memory()} if self.pin_memory else {"x": x, "y": y}
        if self.pin_memory:
            x = CSRBatch(*(t if t.is_pinned() else t.pin_memory() for t in (x.crow, x.col, x.val)), x.shape)
            y = y.pin_memory()
        return {"x": x, "y": y}


class StoreLoader(_Batches):
    """Iterate shuffled mini-batches ``{"x", "y": int64 (B,)}`` of a store split; x is float32 (B, D),
    or with ``sparse=True`` a ``CSRBatch`` to be densified on the training device.

    The order of an epoch is a function of ``(seed, epoch)`` alone (``epoch_order``), so a resumed run
    sees exactly the batches an uninterrupted one would, and ``skip`` resumes mid-epoch without reading
    the skipped batches. Shards are memory-mapped; ``workers`` threads copy the rows of the next batches
    out of them (up to ``prefetch`` batches ahead of the consumer, plus one per worker), and the
    batches are yielded in order, so the result does not depend on ``workers``. ``prefetch <= 0``:
    batches are built in the caller's thread. ``pin_memory`` (CUDA only): batches are built in pinned
    host memory, ready for a non-blocking copy. ``rank``/``world_size``: data-parallel training; the
    global batch is ``batch_size`` and each rank yields its own contiguous ``batch_size / world_size``
    rows of it.
    """

    def __init__(self, store_dir, batch_size: int = 1024, *, shuffle: bool = True, seed: int = 0,
                 split: str = "train", drop_last: bool = True, buffer_shards: int = 4, prefetch: int = 4,
                 workers: int = 1, sparse: bool = False, pin_memory: bool = False, rank: int = 0,
                 world_size: int = 1):
        self.store_dir = Path(store_dir)
        meta_path = self.store_dir / "meta.json"
        if not meta_path.exists():
            raise InputError("is not a complete training store (no meta.json)", path=self.store_dir)
        self.meta = json.loads(meta_path.read_text())
        if split not in self.meta["splits"]:
            raise InputError(f"store has no split '{split}' (has {list(self.meta['splits'])})", path=self.store_dir)
        self.split, self.batch_size, self.shuffle, self.seed = split, int(batch_size), shuffle, int(seed)
        self.drop_last, self.buffer_shards, self.prefetch = drop_last, max(1, buffer_shards), int(prefetch)
        self.workers = max(1, int(workers))
        self.shards = self.meta["splits"][split]["shards"]
        self.n_cells = int(self.meta["splits"][split]["n_cells"])
        self.n_genes = int(self.meta["n_genes"])
        self.classes = list(self.meta["classes"])
        self.gene_ids = (self.store_dir / "genes.txt").read_text().split()
        self.epoch, self._skip = 0, 0
        if self.n_cells < self.batch_size and drop_last:
            raise InputError(f"split '{split}' has {self.n_cells} cells, fewer than one batch of "
                             f"{self.batch_size}", path=self.store_dir)
        self._set_format(sparse, pin_memory, rank, world_size)
        # global cell id = offset of its shard + its row in the shard (shards in meta order)
        self._offsets = np.concatenate([[0], np.cumsum([int(s["n"]) for s in self.shards])]).astype(np.int64)
        if self._offsets[-1] != self.n_cells:
            raise InputError(f"meta.json lists {self._offsets[-1]} cells in the shards of '{split}', "
                             f"n_cells says {self.n_cells}", path=meta_path)
        # the current buffer, the next one (read ahead) and rows carried over from earlier ones
        self._cache = _ShardCache([self.store_dir / s["file"] for s in self.shards], 2 * self.buffer_shards + 2)
        self._copy_rows = _row_copier() if self.workers > 1 and self.prefetch > 0 else None

    def epoch_order(self, epoch: int | None = None) -> tuple[np.ndarray, list[tuple[int, list[int]]]]:
        """The global ids of the epoch's cells in batch order, and per buffer: (its first batch, its shards).

        rng = default_rng([seed, epoch]): a permutation of the shards; then, buffer by buffer
        (``buffer_shards`` shards, preceded by the rows the previous buffer carried over), a permutation
        of the buffer's rows. A buffer that is not the last yields whole batches and carries its
        remaining rows over to the next. Only shard sizes are needed, not their data: resuming at batch
        k reads nothing before it.
        """
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch)])
        n_shards = len(self.shards)
        order = rng.permutation(n_shards) if self.shuffle else np.arange(n_shards)
        carry = np.zeros(0, np.int64)
        parts, groups, n_out = [], [], 0
        for g in range(0, n_shards, self.buffer_shards):
            members = [int(s) for s in order[g : g + self.buffer_shards]]
            ids = np.concatenate([carry, *[np.arange(self._offsets[s], self._offsets[s + 1]) for s in members]])
            perm = rng.permutation(len(ids)) if self.shuffle else np.arange(len(ids))
            n_full = (len(perm) // self.batch_size) * self.batch_size
            if g + self.buffer_shards < n_shards and n_full < len(perm):
                carry = ids[perm[n_full:]]  # leftover rows join the next buffer
                perm = perm[:n_full]
            else:
                carry = carry[:0]
            groups.append((n_out // self.batch_size, members))
            parts.append(ids[perm])
            n_out += len(perm)
        return np.concatenate(parts), groups

    def _gather(self, ids: np.ndarray) -> dict:
        """The batch of cells ``ids`` (global ids, in batch order).

        Each row's values and gene indices are one contiguous slice of its shard; they are copied row by
        row into the batch's arrays (pinned when ``pin_memory``): by the compiled GIL-free loop with
        several workers (``_row_copier``), else slice by slice. Row copies beat a vectorised take here:
        the npz members are unaligned, where numpy's fancy indexing of float32 is ~20x slower.
        """
        shard = np.searchsorted(self._offsets, ids, side="right") - 1
        local = ids - self._offsets[shard]
        n = len(ids)
        uniq, pos = np.unique(shard, return_inverse=True)
        arrays = [self._cache.get(int(s)) for s in uniq]
        starts, lens, y = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
        sels = [np.flatnonzero(pos == j) for j in range(len(arrays))]
        for a, sel in zip(arrays, sels):
            r = local[sel]
            st = a["indptr"][r].astype(np.int64)
            starts[sel] = st
            lens[sel] = a["indptr"][r + 1] - st
            y[sel] = a["labels"][r]
        crow = np.zeros(n + 1, np.int64)
        np.cumsum(lens, out=crow[1:])
        nnz = int(crow[-1])
        val = torch.empty(nnz, dtype=torch.float32, pin_memory=self.pin_memory)
        col = torch.empty(nnz, dtype=torch.int32, pin_memory=self.pin_memory)
        if self._copy_rows is not None:
            for a, sel in zip(arrays, sels):
                self._copy_rows(a["data"], a["indices"], starts[sel], lens[sel], crow[sel], val.numpy(), col.numpy())
        else:
            which, a0, a1 = pos.tolist(), starts.tolist(), (starts + lens).tolist()
            data = [a["data"] for a in arrays]
            np.concatenate([data[j][s:e] for j, s, e in zip(which, a0, a1)], out=val.numpy())
            indices = [a["indices"] for a in arrays]
            np.concatenate([indices[j][s:e] for j, s, e in zip(which, a0, a1)], out=col.numpy())
        return self._finish(CSRBatch(torch.from_numpy(crow), col, val, (n, self.n_genes)), torch.from_numpy(y))

    def __iter__(self) -> Iterator[dict]:
        skip, self._skip = self._skip, 0
        order, groups = self.epoch_order()
        # when batch k is started, ask the kernel to read the next buffer's shards ahead
        advise = {first: groups[i + 1][1] for i, (first, _) in enumerate(groups[:-1])}
        ks = range(skip, len(self))

        def start(k):
            for s in advise.get(k, ()):
                _advise_willneed(self.store_dir / self.shards[s]["file"])

        if self.prefetch <= 0:
            for k in ks:
                start(k)
                yield self._gather(self._rows(order, k))
            return
        window = self.prefetch + self.workers
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="scjepa-loader")
        pending: deque = deque()
        todo = iter(ks)
        try:
            for k in todo:
                start(k)
                pending.append(pool.submit(self._gather, self._rows(order, k)))
                if len(pending) >= window:
                    break
            while pending:
                batch = pending.popleft().result()  # in order; a worker's exception surfaces here
                k = next(todo, None)
                if k is not None:
                    start(k)
                    pending.append(pool.submit(self._gather, self._rows(order, k)))
                yield batch
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)


class ArrayLoader(_Batches):
    """In-memory loader with the StoreLoader interface (tests, small data, fine-tuning)."""

    def __init__(self, X, y=None, batch_size: int = 256, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, classes: Sequence[str] | None = None, gene_ids=None,
                 sparse: bool = False, pin_memory: bool = False, rank: int = 0, world_size: int = 1):
        self.X = sp.csr_matrix(X, dtype=np.float32)
        n = self.X.shape[0]
        self.y = np.full(n, -1, dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64)
        self.batch_size, self.shuffle, self.seed, self.drop_last = int(batch_size), shuffle, int(seed), drop_last
        self.n_cells, self.n_genes = n, self.X.shape[1]
        self.classes = list(classes) if classes is not None else [str(c) for c in range(int(self.y.max()) + 1)]
        self.gene_ids = list(gene_ids) if gene_ids is not None else None
        self.epoch, self._skip = 0, 0
        self._set_format(sparse, pin_memory, rank, world_size)

    def __iter__(self) -> Iterator[dict]:
        skip, self._skip = self._skip, 0
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(self.n_cells) if self.shuffle else np.arange(self.n_cells)
        for k in range(skip, len(self)):
            idx = self._rows(perm, k)
            yield self._finish(CSRBatch.from_scipy(self.X[idx]), torch.from_numpy(self.y[idx]))


def build_store_rule(rule) -> dict:
    """Rule ``build_store``: the corpus' train/val splits (``input.processed``) as shards in ``output.store``."""
    meta = build_store(rule.input["processed"], rule.output["store"], shard_size=rule.params["store"]["shard_size"],
                       seed=rule.params["seed"])
    logging.getLogger(__name__).info("store: %s", {k: v["n_cells"] for k, v in meta["splits"].items()})
    return meta
