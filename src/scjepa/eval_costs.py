"""Cost model of the evaluation rules: CPU seconds, peak memory and (fine-tuning) GPU seconds from cell counts.

Fitted to ``benchmarks/bench_eval_scale.py`` (``benchmarks/results/eval_scale.json``; the table and the fit
in benchmarks/RESULTS.md, 'Paper-scale evaluation costs'): each evaluation's library call in a fresh
1-thread process on the project's 2-core machine, 100k to 1M cells. The rules' ``resources:`` come from
:func:`resources`, evaluated by Snakemake when the job is scheduled: the dataset's cell count, split sizes
and non-zeros are read from the processed h5ad's header with h5py (milliseconds, no matrix read). Before
the file exists (a dry run, or DAG building before the data stage ran) the rule's former fixed values are
used; Snakemake evaluates resources again, with the input present, before it submits the job.

Resources keep the workflow's attempt scaling: memory x 1.5 and runtime x attempt per retry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

# ---- fitted constants (seconds are CPU seconds of one thread; see the module docstring) ---------------

#: exact kNN (scikit-learn brute force, k = 5, 64-d): seconds per (reference x query) pair
KNN_S_PER_PAIR = 4.5e-9  # measured 5.2e-9 at 100k, 4.5e-9 at 300k, 4.45e-9 at 1M cells (70 % -> 15 %)
#: the linear probe (lbfgs, multinomial): seconds per reference cell, class and lbfgs iteration (measured:
#: 1.8e-8 at 100k cells / 23 iterations, 2.8e-8 at 1M / 6 iterations, where the fixed part weighs more)
PROBE_S_PER_CELL_CLASS_ITER = 2.0e-8
PROBE_MAX_ITER = 1000  # scjepa.knn.linear_probe_predict's bound: the worst case the runtime allows for
PROBE_TYPICAL_ITER = 100  # an assumption for the CPU-hours (the blobs converged in 6-31; real latents take more)
#: fine-tuning, the finetune task's in-memory path, D = 19,331 genes, MLP encoder, batch 1,024, 1 thread:
#: CPU seconds per epoch per cell of the dataset (train steps on 70 % + val scoring on 15 %; measured
#: 5.0e-4 at 30k and 5.1e-4 at 100k cells)
FINETUNE_EPOCH_S_PER_CELL_CPU = 5.1e-4
#: the same on a GPU node: the host's batch assembly (CSR fancy-index + densify, measured 1.2e-5 s per train
#: cell, i.e. 1.0e-5 per dataset cell with val) + ~3 ms of step overhead per 1,024-cell batch (assumed); the
#: GPU's own compute (6 x 10.4M parameters = 0.06 GFLOP per cell per step, 0.16 us at 40 % of an H100) is
#: negligible beside it
FINETUNE_EPOCH_S_PER_CELL_GPU = 1.5e-5
FINETUNE_JOB_OVERHEAD_S = 30.0
#: scib-metrics per run at m cells: a * m ** b seconds (kBET and BRAS per label dominate), plus the job's
#: imports and jax/numba compilation once
SCIB_A, SCIB_B = 1.64e-4, 1.3  # runs after the first: 25.7 CPU-s at 10k, 73.3 at 25k, ~211 at 50k cells
SCIB_JOB_OVERHEAD_S = 70.0  # the first run's extra (tracing/compilation): 14-69 s measured
#: memory: the process (imports) plus bytes per cell of what the job holds
BASE_MB = {"zero_shot": 250.0, "spatial": 250.0, "finetune": 1000.0, "integration": 1800.0}
EMB_BYTES_PER_CELL = 1800.0  # embedding (64 float32) + obs + cell ids + kNN/probe working set: 386 MB at 100k,
#                              749 MB at 300k, 1,994 MB at 1M cells measured (zero-shot)
CSR_BYTES_PER_NNZ = 8.0  # float32 value + int32 index
FINETUNE_X_COPIES = 1.3  # X read whole + batches (1.26x measured at 100k; 2.2x before the rows were indexed)
SCIB_BYTES_PER_CELL = 30_000.0  # scib-metrics' per-run working set (kNN graphs, per-label diffusion maps)
#: fine-tuning on the store path (scjepa.tasks.finetune_store): X is never held. What grows with cells is a few
#: bytes per cell: the split and label columns' codes read whole when the job starts (and the (label, term id)
#: pairs with hierarchy on), and per val/test cell its row id, label and prediction codes and the rank strings
#: it is scored on. What does not: the loaders (at most 2 x buffer_shards + 2 train and 4 val shards mapped, a few batches),
#: one evaluation chunk (CSR, up to 2 x eval_batch rows read, and dense eval_batch x genes float32 on the host
#: when the device is the CPU), the model. Not measured at paper scale (an upper-bound count of the arrays).
STREAM_BYTES_PER_CELL = 24.0
STREAM_BYTES_PER_EVAL_CELL = 120.0
#: hierarchy-corrected scores hold the test split's label strings and term ids (scjepa.ontology): ~700 B per
#: test cell at CELLxGENE's label lengths
HIER_BYTES_PER_TEST_CELL = 1000.0
STORE_BYTES_PER_CELL = 24.0  # a shard's indptr (int64) and label (int64) per cell, beside its non-zeros
EVAL_CHUNK = 4096  # scjepa.tasks.finetune.FinetuneConfig.eval_batch_size

#: the rules' former fixed values: the floor of the model, and what a job gets before its input exists
FLOOR = {"zero_shot": (4000, 30), "spatial": (4000, 30), "finetune": (8000, 120), "integration": (8000, 60)}
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
RUNTIME_SAFETY = 2.0  # a cluster core may be slower, or shared; and the probe may need more iterations
MEM_SAFETY = 1.3


@dataclass(frozen=True)
class Shape:
    """What the cost of an evaluation depends on, read from a processed (or embedding) h5ad."""

    n_obs: int
    n_vars: int = 0
    nnz: int | None = None  # non-zeros of X (sparse); n_obs * n_vars for dense
    splits: Mapping[str, int] | None = None  # cells per split value, where obs has a 'split' column
    n_classes: int | None = None  # categories of obs 'cell_type' (categorical), where readable

    def split(self, name: str | None) -> int:
        if name is None:
            return self.n_obs
        if self.splits is not None:
            return int(self.splits.get(name, 0))
        return int(round(SPLIT_FRACTIONS.get(name, 0.0) * self.n_obs))


@dataclass(frozen=True)
class Cost:
    cpu_s: float  # CPU seconds (1 thread) of the whole job
    mem_mb: float  # peak resident memory
    gpu_s: float = 0.0  # seconds of GPU time (fine-tuning on a GPU node), 0 for CPU jobs

    @property
    def wall_s(self) -> float:
        """The job's wall time: its GPU time where it has one, else its CPU time (1 thread)."""
        return self.gpu_s or self.cpu_s


def read_shape(path: str | Path, *, splits: bool = True) -> Shape:
    """Cells, genes, non-zeros and split sizes of an h5ad, from its header (h5py; X is not read)."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        obs = f["obs"]
        index = obs.attrs.get("_index", "_index")
        n_obs = int(obs[index].shape[0])
        n_vars, nnz = 0, None
        if "X" in f:
            X = f["X"]
            if isinstance(X, h5py.Group):  # sparse: data/indices/indptr, shape in the attributes
                n_vars = int(X.attrs["shape"][1])
                nnz = int(X["data"].shape[0])
            else:
                n_vars = int(X.shape[1])
                nnz = n_obs * n_vars
        elif "var" in f:
            var = f["var"]
            n_vars = int(var[var.attrs.get("_index", "_index")].shape[0])
        n_classes = None
        if "cell_type" in obs and isinstance(obs["cell_type"], h5py.Group) and "categories" in obs["cell_type"]:
            n_classes = int(obs["cell_type"]["categories"].shape[0])
        counts = None
        if splits and "split" in obs:
            col = obs["split"]
            if isinstance(col, h5py.Group) and "codes" in col:  # categorical: count the codes (1 byte a cell)
                codes = col["codes"][()]
                cats = [c.decode() if isinstance(c, bytes) else str(c) for c in col["categories"][()]]
                got = np.bincount(codes[codes >= 0], minlength=len(cats))
                counts = {c: int(k) for c, k in zip(cats, got)}
            else:
                vals = col[()]
                u, k = np.unique(vals, return_counts=True)
                counts = {(x.decode() if isinstance(x, bytes) else str(x)): int(c) for x, c in zip(u, k)}
    return Shape(n_obs=n_obs, n_vars=n_vars, nnz=nnz, splits=counts, n_classes=n_classes)


# ---- the model per task ---------------------------------------------------------------------------


def knn_seconds(n_ref: int, n_query: int) -> float:
    return KNN_S_PER_PAIR * float(n_ref) * float(n_query)


def probe_seconds(n_ref: int, n_classes: int = 164, iterations: int = PROBE_MAX_ITER) -> float:
    return PROBE_S_PER_CELL_CLASS_ITER * float(n_ref) * n_classes * iterations


def zero_shot_cost(shape: Shape, *, ref_split="train", query_split="test", probe=True, n_classes=None,
                   probe_iterations=PROBE_MAX_ITER) -> Cost:
    """kNN over reference x query pairs + the probe (``n_classes``: the shape's, else scTab's 164)."""
    n_ref, n_query = shape.split(ref_split), shape.split(query_split)
    n_classes = n_classes or shape.n_classes or 164
    cpu = 5.0 + knn_seconds(n_ref, n_query) + (probe_seconds(n_ref, n_classes, probe_iterations) if probe else 0.0)
    return Cost(cpu_s=cpu, mem_mb=BASE_MB["zero_shot"] + EMB_BYTES_PER_CELL * shape.n_obs / 2**20)


def spatial_cost(spatial: Shape, reference: Shape | None = None, *, probe=True, n_classes=None,
                 probe_iterations=PROBE_MAX_ITER) -> Cost:
    within = zero_shot_cost(spatial, probe=probe, n_classes=n_classes, probe_iterations=probe_iterations)
    cpu, cells = within.cpu_s, spatial.n_obs
    if reference is not None:
        cpu += knn_seconds(reference.n_obs, spatial.n_obs)
        cells += reference.n_obs
    return Cost(cpu_s=cpu, mem_mb=BASE_MB["spatial"] + EMB_BYTES_PER_CELL * cells / 2**20)


def finetune_cost(shape: Shape, *, epochs: int, seeds: int, gpu: bool = False, streaming: bool = False,
                  batch_size: int = 1024, shard_size: int = 8192, buffer_shards: int = 4,
                  eval_chunk: int = EVAL_CHUNK, hierarchy: bool = False) -> Cost:
    """All seeds of one (method, dataset) fine-tuning job: epochs x (train + val scoring) + test scoring.

    Memory, in-memory path (``streaming=False``): the task reads the processed X whole (CSR) and indexes its
    rows, so it grows with the dataset's non-zeros (1.26x X measured). Store path (``streaming=True``,
    :mod:`scjepa.tasks.finetune_store`): bounded by the batch, buffer and chunk sizes
    (:func:`finetune_stream_mem_mb`) plus a few bytes per cell. Time: the same per-cell model for both (the
    store loader assembles batches faster than the in-memory CSR indexing, RESULTS 'Data layer': an upper
    bound for the store path).
    """
    per_epoch = (FINETUNE_EPOCH_S_PER_CELL_GPU if gpu else FINETUNE_EPOCH_S_PER_CELL_CPU) * shape.n_obs
    run = FINETUNE_JOB_OVERHEAD_S + seeds * (epochs + 0.2) * per_epoch
    nnz = shape.nnz if shape.nnz is not None else shape.n_obs * 2000
    if streaming:
        mem = finetune_stream_mem_mb(shape, batch_size=batch_size, shard_size=shard_size,
                                     buffer_shards=buffer_shards, eval_chunk=eval_chunk, gpu=gpu,
                                     hierarchy=hierarchy)
    else:
        mem = BASE_MB["finetune"] + FINETUNE_X_COPIES * CSR_BYTES_PER_NNZ * nnz / 2**20
    return Cost(cpu_s=run if not gpu else FINETUNE_JOB_OVERHEAD_S + seeds * epochs * per_epoch,
                mem_mb=mem, gpu_s=run if gpu else 0.0)


def finetune_stream_mem_mb(shape: Shape, *, batch_size: int = 1024, shard_size: int = 8192, buffer_shards: int = 4,
                           eval_chunk: int = EVAL_CHUNK, gpu: bool = False, hierarchy: bool = False) -> float:
    """Peak memory (MB) of the store path: the process, the mapped shards, the batches in flight, one
    evaluation chunk, and a few bytes per cell (see :data:`STREAM_BYTES_PER_CELL`)."""
    nnz_per_cell = (shape.nnz / shape.n_obs) if (shape.nnz is not None and shape.n_obs) else 2000.0
    row = CSR_BYTES_PER_NNZ * nnz_per_cell
    # train loader: 2 x buffer + 2 shards mapped; the val split's loader (1-shard buffer): 4 more
    shards = (2 * buffer_shards + 2 + 4) * shard_size * (row + STORE_BYTES_PER_CELL)
    batches = 4 * batch_size * (row + 16) + (0 if gpu else 3 * batch_size * 4 * shape.n_vars)
    chunk = 2 * eval_chunk * row * 2 + (0 if gpu else 2 * eval_chunk * 4 * shape.n_vars)
    n_eval = shape.split("val") + shape.split("test")
    per_cell = STREAM_BYTES_PER_CELL * shape.n_obs + STREAM_BYTES_PER_EVAL_CELL * n_eval
    if hierarchy:
        per_cell += HIER_BYTES_PER_TEST_CELL * shape.split("test")
    return BASE_MB["finetune"] + (shards + batches + chunk + per_cell) / 2**20


def integration_run_cells(n_obs: int, subsample: float = 0.8, max_cells: int | None = 50_000) -> int:
    m = max(1, int(round(subsample * n_obs)))
    return m if max_cells is None else min(m, int(max_cells))


def integration_cost(shape: Shape, *, runs: int, subsample: float = 0.8, max_cells: int | None = 50_000) -> Cost:
    m = integration_run_cells(shape.n_obs, subsample, max_cells)
    cpu = SCIB_JOB_OVERHEAD_S + runs * SCIB_A * m**SCIB_B
    nnz = shape.nnz if shape.nnz is not None else shape.n_obs * 2000
    mem = (BASE_MB["integration"] + CSR_BYTES_PER_NNZ * nnz / 2**20 + EMB_BYTES_PER_CELL * shape.n_obs / 2**20
           + SCIB_BYTES_PER_CELL * m / 2**20)
    return Cost(cpu_s=cpu, mem_mb=mem)


# ---- Snakemake resources --------------------------------------------------------------------------


def job_resources(task: str, cost: Cost | None, attempt: int = 1, floor: tuple[int, int] | None = None
                  ) -> dict[str, int]:
    """mem_mb and runtime (minutes) of a job from its predicted cost, never below the rule's former fixed
    values (``floor``, default :data:`FLOOR`), with the workflow's attempt scaling (memory x 1.5, runtime x
    attempt per retry)."""
    floor_mb, floor_min = floor or FLOOR[task]
    mem, minutes = float(floor_mb), float(floor_min)
    if cost is not None:
        mem = max(mem, MEM_SAFETY * cost.mem_mb)
        minutes = max(minutes, RUNTIME_SAFETY * cost.wall_s / 60.0 + 10.0)
    mem_mb = int(math.ceil(mem * 1.5 ** (attempt - 1) / 100.0) * 100)
    return {"mem_mb": mem_mb, "runtime": int(math.ceil(minutes * attempt))}


def _shape_or_none(path) -> Shape | None:
    try:
        if path and Path(str(path)).exists():
            return read_shape(path)
    except Exception:  # a file being written, or not an h5ad: schedule with the floor, the job reports it
        return None
    return None


def resources(task: str, cost_of: Callable[..., Cost | None], floor: tuple[int, int] | None = None
              ) -> tuple[Callable, Callable]:
    """(mem_mb, runtime) callables for a rule's ``resources:``; ``cost_of(wildcards, input, shape_of)``
    predicts the job's :class:`Cost` (``shape_of(path)`` reads a header, None while the file is absent);
    ``floor``: the rule's former (mem_mb, runtime), used as the minimum and while the input is absent."""

    def _res(wildcards, input, attempt):
        try:
            cost = cost_of(wildcards, input, _shape_or_none)
        except Exception:
            cost = None
        return job_resources(task, cost, attempt, floor)

    def mem_mb(wildcards, input, attempt):
        return _res(wildcards, input, attempt)["mem_mb"]

    def runtime(wildcards, input, attempt):
        return _res(wildcards, input, attempt)["runtime"]

    return mem_mb, runtime
