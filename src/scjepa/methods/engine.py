"""The one training loop of every torch method.

``train(module, loader, hp, out_dir=..., val=...)`` runs AdamW + StepLR (stepped once per epoch) over an
iterable of batches ``{"x": float32 (B, D), "y": int64 (B,)}`` until ``hp.max_epochs`` epochs or
``hp.max_steps`` optimiser steps. The module supplies ``training_step(batch, generator) -> {"loss": ...,
<term>: ...}``, a tuple ``loss_terms`` naming the terms, and an ``encoder`` (the embedding for val kNN).

Resume is exact: a checkpoint (every ``checkpoint_every`` steps and at every epoch end, written
atomically) holds the weights, the optimiser, the scheduler, every RNG (torch global = dropout, the
method's generator = masks/directions/noise), the step, the epoch and the number of batches consumed in
that epoch, and whether the run had finished. The loader's batch order is a function of (seed, epoch)
only (``set_epoch``), so a resumed run re-creates the epoch's order and skips the consumed batches; on CPU
it ends with the same weights as an uninterrupted run, bit for bit. A finished checkpoint is resumed too (zero steps, or more if
``max_epochs``/``max_steps`` grew); one with other hyper-parameters is ignored if finished and an error
if not; one past this run's end is ignored.

Val kNN macro-F1 (curve column ``val_knn_macro_f1``): the val cells (labelled, at most
``hp.val_max_cells``, drawn with a fixed seed) are split in two random halves; the first half is the
reference, the second the query; kNN (k = ``hp.knn_k``, Euclidean) on the encoder output.

Batches may arrive as CSR (``scjepa.data.store.CSRBatch``, from ``StoreLoader(sparse=True)``): they are
copied to the device (non-blocking from pinned memory) and densified there (``DeviceFeed``); on CUDA
the copy and densification of batch k+1 run on a side stream while step k computes. On CPU the same
code runs in the training thread, and the dense batch equals the host-densified one bit for bit.

Data parallelism: inside an initialised process group of W > 1 ranks (``scjepa.methods.distributed``
starts one with torchrun), the module is wrapped in DistributedDataParallel (gradients averaged over
ranks), each rank's loader yields its part of every global batch, and the methods compute batch
statistics over the global batch (``scjepa.models.distributed``), so the run matches the 1-process run
with the same global batch up to floating-point summation order. Rank 0 alone writes checkpoints and
the curve and scores the val kNN; every rank resumes from the same checkpoint (every RNG state is the
same on all ranks). Curve rows average the loss terms over ranks.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from scjepa.device import resolve_device
from scjepa.errors import InputError
from scjepa.io import atomic_path
from scjepa.models.distributed import cells_per_rank, rank_world

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CURVE = "curve.csv"
# Hyper-parameters that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"max_epochs", "max_steps", "log_every", "val_every", "checkpoint_every", "device",
                     "progress", "val_max_cells", "infer_batch_size"}


def use_caching_malloc() -> bool:
    """Keep freed CPU memory in the process instead of returning it to the OS (glibc only).

    PyTorch's CPU allocator has no cache: every large tensor is a fresh mmap whose pages fault in on
    first touch, each step anew; on CPU that costs a sizeable fraction of a training step. Disabling
    mmap for malloc (M_MMAP_MAX = 0) and trimming (M_TRIM_THRESHOLD) lets the heap reuse the pages; the
    price is that the process keeps its peak memory. Called by ``pretrain`` and the benchmark; a no-op
    (False) where glibc is not present.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))
    except (OSError, AttributeError):
        return False


def make_optimizer(module: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused (one vectorised pass over all parameters) where this torch supports it."""
    try:
        return torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)


def autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast on CUDA (precision "auto"/"bf16"), plain fp32 otherwise."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loader_settings(device, num_threads: int | None = None) -> dict:
    """``StoreLoader`` keyword arguments for training on ``device`` with ``num_threads`` CPUs per process.

    CSR batches (densified on the device by ``DeviceFeed``), built in pinned memory when the device is
    CUDA, by ``num_threads - 1`` worker threads (at least one; the training loop keeps a core), and this
    process's part of every global batch in a data-parallel run.
    """
    rank, world = rank_world()
    return {"sparse": True, "pin_memory": torch.device(device).type == "cuda",
            "workers": max(1, int(num_threads or 1) - 1), "rank": rank, "world_size": world}


class DeviceFeed:
    """The batches of ``batches`` on ``device``, with every ``CSRBatch`` densified there.

    Tensors are copied with ``non_blocking=True`` (asynchronous from pinned host memory). On CUDA the
    copy and densification of batch k+1 are issued on a side stream before batch k is handed out, so
    they overlap step k; the training stream waits on an event before it uses a batch, and the batch's
    memory is marked as used by that stream (``record_stream``) so the allocator does not recycle it
    early. Elsewhere the same two functions run in order, in the training thread.
    """

    def __init__(self, batches: Iterable[dict], device):
        self.batches, self.device = batches, torch.device(device)

    def move(self, batch: dict) -> dict:
        from scjepa.data.store import densify

        return densify({k: v.to(self.device, non_blocking=True) for k, v in batch.items()})

    def __iter__(self):
        if self.device.type != "cuda":
            for batch in self.batches:
                yield self.move(batch)
            return
        side = torch.cuda.Stream(self.device)
        main = torch.cuda.current_stream(self.device)

        def stage(batch):
            if batch is None:
                return None
            with torch.cuda.stream(side):
                out = self.move(batch)
                ready = torch.cuda.Event()
                ready.record(side)
            return out, ready

        it = iter(self.batches)
        staged = stage(next(it, None))
        while staged is not None:
            out, ready = staged
            staged = stage(next(it, None))  # batch k+1 on its way while step k runs
            main.wait_event(ready)
            for t in out.values():
                t.record_stream(main)
            yield out


class _TrainingStep(torch.nn.Module):
    """``module.training_step`` as ``forward``: DistributedDataParallel synchronises the gradients of
    what its wrapped module's forward computes."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, batch: dict, generator) -> dict:
        return self.module.training_step(batch, generator)


@torch.no_grad()
def encode_array(encoder: torch.nn.Module, X, batch_size: int = 2048, device=None) -> np.ndarray:
    """Embed rows of X (dense array or scipy sparse, (N, D)) in eval mode: (N, d) float32."""
    import scipy.sparse as sp

    device = device or next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        for start in range(0, X.shape[0], batch_size):
            xb = X[start : start + batch_size]
            xb = xb.toarray() if sp.issparse(xb) else np.asarray(xb)
            xb = torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32)).to(device)
            out.append(encoder(xb).float().cpu().numpy())
    finally:
        encoder.train(was_training)
    d = getattr(encoder, "latent", None)
    return np.concatenate(out) if out else np.zeros((0, d or 0), np.float32)


class ValKNN:
    """Periodic zero-shot check: kNN macro-F1 of the val cells, half reference / half query."""

    def __init__(self, X, labels, k: int = 5, max_cells: int = 20_000, seed: int = 0):
        labels = np.asarray(labels)
        keep = np.flatnonzero(_is_labelled(labels))
        rng = np.random.default_rng(seed)
        idx = rng.permutation(keep)[:max_cells]
        half = len(idx) // 2
        if half < 1:
            raise InputError(f"val set has {len(keep)} labelled cells; need at least 2 for kNN")
        self.ref, self.query = np.sort(idx[:half]), np.sort(idx[half:])
        self.X, self.labels, self.k = X, labels, k

    @classmethod
    def from_any(cls, val, **kw) -> "ValKNN | None":
        """val: None, ValKNN, (X, labels), or AnnData with obs["cell_type"]."""
        if val is None or isinstance(val, ValKNN):
            return val
        if isinstance(val, tuple):
            return cls(val[0], val[1], **kw)
        if "cell_type" not in val.obs:
            raise InputError("val AnnData has no obs column", column="cell_type")
        return cls(val.X, val.obs["cell_type"].astype(object).to_numpy(), **kw)

    def score(self, encoder, batch_size: int = 2048) -> float:
        from scjepa.knn import knn_predict, score_annotation  # the one kNN scorer of every task

        sel = np.concatenate([self.ref, self.query])
        emb = encode_array(encoder, self.X[sel], batch_size)
        y = self.labels[sel].astype(str)
        n_ref = len(self.ref)
        pred = knn_predict(emb[:n_ref], y[:n_ref], emb[n_ref:], k=min(self.k, n_ref))
        return float(score_annotation(y[n_ref:], pred)["macro_f1"])


def _is_labelled(labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind in "iu":
        return labels >= 0
    if labels.dtype.kind == "f":
        return np.isfinite(labels)
    return np.array([v is not None and v == v and str(v) != "" for v in labels], dtype=bool)


class _Curve:
    """Mean of each loss term since the last row; rows are plain dicts (kept in the checkpoint)."""

    def __init__(self, terms: Sequence[str]):
        self.columns = ["step", "epoch", "loss", *[t for t in terms if t != "loss"], "lr", "val_knn_macro_f1"]
        self.rows: list[dict] = []
        self.acc: dict[str, torch.Tensor | float] = {}
        self.n = 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for k, v in terms.items():  # stays on the device: no sync per step
            v = v.detach().float()
            self.acc[k] = self.acc[k] + v if k in self.acc else v
        self.n += 1

    def has_row(self, step: int) -> bool:
        return self.n == 0 and bool(self.rows) and self.rows[-1]["step"] == step

    def row(self, step: int, epoch: int, lr: float, val: float | None) -> dict:
        if self.has_row(step):  # e.g. an epoch end right after a logged step: fill in val only
            if val is not None:
                self.rows[-1]["val_knn_macro_f1"] = val
            return self.rows[-1]
        r = {"step": step, "epoch": epoch, "lr": lr, "val_knn_macro_f1": val}
        for k, v in self.acc.items():
            r[k] = float(v) / max(self.n, 1)
        self.rows.append(r)
        self.acc, self.n = {}, 0
        return r

    def average_over_ranks(self, device, world: int) -> None:
        """Replace the accumulated terms by their mean over the ``world`` ranks (a collective: every
        rank calls it at the same step)."""
        if not self.acc:
            return
        keys = sorted(self.acc)
        t = torch.stack([torch.as_tensor(self.acc[k], dtype=torch.float32).to(device) for k in keys])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        self.acc = dict(zip(keys, (t / world).unbind()))

    def state(self) -> dict:
        return {"rows": self.rows, "acc": {k: float(v) for k, v in self.acc.items()}, "n": self.n}

    def load(self, s: dict) -> None:
        self.rows, self.n = list(s["rows"]), s["n"]
        self.acc = {k: torch.tensor(v, dtype=torch.float32) for k, v in s["acc"].items()}

    def write(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            for r in self.rows:
                w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in self.columns})


def _resume_key(hp) -> dict:
    return {k: v for k, v in asdict(hp).items() if k not in RESUMABLE_CHANGES}


def train(
    module: torch.nn.Module,
    loader: Iterable[dict],
    hp,
    *,
    out_dir: str | os.PathLike | None = None,
    val=None,
    callbacks: Sequence[Callable[[dict], None]] = (),
) -> list[dict]:
    """Train ``module`` in place; return the curve rows. ``hp``: a ``TrainHParams`` dataclass.

    out_dir: where checkpoint.pt and curve.csv go; an existing checkpoint there is resumed.
    callbacks: called after every step (and after any checkpoint of that step) with
    ``{"step", "epoch", "batch_in_epoch", "terms"}``; an exception from one stops training.
    With W > 1 data-parallel ranks every rank calls this with its own loader (its part of each global
    batch, ``loader_settings``); only rank 0 needs ``val`` and writes to ``out_dir``.
    """
    device = resolve_device(hp.device)
    rank, world = rank_world()
    main = rank == 0
    module.to(device).train()
    gen = torch.Generator(device=device)
    gen.manual_seed(hp.seed)
    opt = make_optimizer(module, hp.lr, hp.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp.lr_step_epochs, gamma=hp.lr_gamma)
    curve = _Curve(module.loss_terms)
    val = ValKNN.from_any(val, k=hp.knn_k, max_cells=hp.val_max_cells) if main else None
    has_val = val is not None
    if world > 1:  # the same curve rows on every rank (the val column is rank 0's; NaN elsewhere)
        flag = torch.tensor([float(has_val)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        has_val = bool(flag.item())
    st = {"step": 0, "epoch": 0, "batch_in_epoch": 0}
    out_dir = Path(out_dir) if out_dir is not None else None
    ckpt = out_dir / CHECKPOINT if out_dir is not None else None

    c = torch.load(ckpt, map_location="cpu", weights_only=False) if ckpt is not None and ckpt.exists() else None
    key = _resume_key(hp)
    if c is not None and c["resume_key"] != key:
        diff = sorted(k for k in c["resume_key"] if c["resume_key"][k] != key.get(k))
        if not c.get("finished"):
            raise InputError(f"checkpoint was written with other hyper-parameters {diff}; delete it to start over",
                             path=ckpt)
        log.info("not resuming the finished run in %s: it had other hyper-parameters %s", ckpt, diff)
        c = None
    if c is not None and (c["state"]["epoch"] > hp.max_epochs
                          or (hp.max_steps is not None and c["state"]["step"] > hp.max_steps)):
        log.warning("not resuming %s: it is at step %d (epoch %d), past this run's end; starting over", ckpt,
                    c["state"]["step"], c["state"]["epoch"])
        c = None
    if c is not None:
        module.load_state_dict(c["model"])
        opt.load_state_dict(c["optimizer"])
        sched.load_state_dict(c["scheduler"])
        torch.set_rng_state(c["rng_cpu"])
        if device.type == "cuda" and c.get("rng_cuda") is not None:
            if isinstance(c["rng_cuda"], (list, tuple)):  # checkpoints from before multi-GPU training
                torch.cuda.set_rng_state_all(c["rng_cuda"])
            else:  # the training device's state (the same on every rank)
                torch.cuda.set_rng_state(c["rng_cuda"], device)
        gen.set_state(c["rng_generator"])
        curve.load(c["curve"])
        st = c["state"]
        log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, st["step"], st["epoch"],
                 st["batch_in_epoch"])

    step_fn = module.training_step
    if world > 1:
        import inspect

        from torch.nn.parallel import DistributedDataParallel as DDP

        # built after the checkpoint is loaded (DDP broadcasts rank 0's weights, the same anyway); no
        # buffer broadcast before each forward: every rank updates its buffers from the same global
        # statistics (the keyword's name changed in torch 2.13)
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                   else {"broadcast_buffers": False})
        step_fn = DDP(_TrainingStep(module),
                      device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None, **no_sync)

    saved_at = [None]

    def save_checkpoint():
        if ckpt is None or not main or saved_at[0] == tuple(st.values()):
            return
        saved_at[0] = tuple(st.values())
        c = {"model": module.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "rng_cpu": torch.get_rng_state(), "rng_generator": gen.get_state(),
             "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
             "curve": curve.state(), "state": dict(st), "resume_key": key, "finished": done()}
        with atomic_path(ckpt) as tmp:
            torch.save(c, tmp)
        curve.write(out_dir / CURVE)

    def log_row(with_val: bool):
        already = curve.has_row(st["step"]) and curve.rows[-1]["val_knn_macro_f1"] is not None
        if curve.has_row(st["step"]) and (already or not with_val or not has_val):
            return
        val_f1 = None
        if with_val and has_val:
            val_f1 = val.score(module.encoder, hp.infer_batch_size) if val is not None else float("nan")
        if world > 1 and not curve.has_row(st["step"]):
            curve.average_over_ranks(device, world)
        r = curve.row(st["step"], st["epoch"], opt.param_groups[0]["lr"], val_f1)
        if main:
            terms = " ".join(f"{k}={r[k]:.4g}" for k in curve.columns[2:-2] if k in r)
            log.info("step %d epoch %d %s%s", st["step"], st["epoch"], terms,
                     "" if val_f1 is None else f" val_knn_macro_f1={val_f1:.4f}")

    def done():
        return st["epoch"] >= hp.max_epochs or (hp.max_steps is not None and st["step"] >= hp.max_steps)

    try:
        n_batches = len(loader)  # type: ignore[arg-type]
    except TypeError:
        n_batches = None
    total = hp.max_epochs * n_batches if n_batches else None
    if hp.max_steps is not None:
        total = min(total, hp.max_steps) if total else hp.max_steps
    tty = sys.stderr.isatty()
    from tqdm.auto import tqdm

    pbar = tqdm(total=total, initial=st["step"], disable=not hp.progress or not main, mininterval=1 if tty else 30,
                unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    step0 = st["step"]
    amp = autocast(device, hp.precision)
    try:
        while not done():
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(st["epoch"])
            # Resume mid-epoch: the same order, minus the consumed batches.
            if st["batch_in_epoch"] and hasattr(loader, "skip"):
                loader.skip(st["batch_in_epoch"])
                it = iter(loader)
            else:
                it = iter(loader)
                for _ in range(st["batch_in_epoch"]):
                    if next(it, None) is None:
                        break
            stopped = False
            for batch in DeviceFeed(it, device):
                with amp, cells_per_rank(len(batch["x"])):
                    terms = step_fn(batch, gen)
                opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                if hp.grad_clip:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), hp.grad_clip)
                opt.step()
                st["step"] += 1
                st["batch_in_epoch"] += 1
                curve.add(terms)
                pbar.update(1)
                is_val = bool(hp.val_every) and st["step"] % hp.val_every == 0
                if is_val or st["step"] % hp.log_every == 0:
                    log_row(is_val)
                if hp.checkpoint_every and st["step"] % hp.checkpoint_every == 0:
                    save_checkpoint()
                for cb in callbacks:
                    cb({"step": st["step"], "epoch": st["epoch"], "batch_in_epoch": st["batch_in_epoch"],
                        "terms": terms})
                if hp.max_steps is not None and st["step"] >= hp.max_steps:
                    stopped = True
                    break
            if stopped:
                break
            if st["batch_in_epoch"] == 0:
                raise InputError("the training loader yielded no batches")
            log_row(True)  # the epoch's last row: its epoch and lr, val at the epoch end
            sched.step()
            st["epoch"] += 1
            st["batch_in_epoch"] = 0
            save_checkpoint()
        log_row(True)
        save_checkpoint()
    finally:
        pbar.close()
    dt = time.perf_counter() - t0
    if main and st["step"] > step0 and math.isfinite(dt):
        log.info("trained %d steps in %.1f s (%.3g steps/s)", st["step"] - step0, dt, (st["step"] - step0) / dt)
    return curve.rows
