"""Data parallelism inside the losses: what a method needs so that W ranks train like one process.

Under DistributedDataParallel (``scjepa.methods.distributed``) each of the W ranks holds a contiguous
slice ``[r·n, (r+1)·n)`` of the global batch of W·n cells (``StoreLoader(rank=r, world_size=W)``), and
DDP averages the W ranks' gradients. Averaging gives the gradient of the 1-process loss only for terms
that are means over cells. The rest needs the helpers here:

- **Batch statistics** (SIGReg's empirical characteristic function, Barlow Twins' standardisation and
  cross-correlation, the BatchNorm of its projector) are taken over the *global* batch: ``gather_cells``
  all-gathers the local rows with their gradients, so every rank computes the 1-process statistic.
  Its backward sums, over ranks, the gradients with respect to this rank's rows; every rank computes
  the same statistic, so each rank's rows receive W times their gradient, and DDP's division by W
  makes that the 1-process gradient.
- **Ratios with a data-dependent denominator** (the MAE's mean over masked entries, the class-weighted
  cross-entropy) divide the local numerator by the global denominator (``global_sum``), times W.
- **Per-cell random draws** (masks, augmentation noise, dropout) are drawn at the global batch's shape
  from generators that every rank holds in the same state, and each rank keeps its slice
  (``draw_cells``): a W-rank run uses the very random numbers of the 1-process run (on CPU, where both
  draw the same way; see ``models.mlp.Dropout`` for CUDA). The price is W times the random draws per
  rank, small next to the matmuls they feed. A side effect is that every RNG state is the same on all
  ranks, so rank 0's checkpoint holds every rank's state.

With one process (no process group, or a group of one) every helper is the identity or the plain draw,
so single-process training is unchanged bit for bit. The training engine sets the local batch size
(``cells_per_rank``) around each training step.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
import torch.distributed as dist

_CELLS: list[int | None] = [None]  # this rank's cells in the current training step (cells_per_rank)


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def cells_per_rank(n: int):
    """Declare that the current training step holds ``n`` cells on each rank (for ``Dropout``)."""
    prev, _CELLS[0] = _CELLS[0], int(n)
    try:
        yield
    finally:
        _CELLS[0] = prev


def local_cells() -> int:
    if _CELLS[0] is None:
        raise RuntimeError("a multi-rank training step must run inside cells_per_rank(n)")
    return _CELLS[0]


class _GatherCells(torch.autograd.Function):
    """Concatenate every rank's ``x`` along ``dim`` (in rank order); backward: the sum over ranks of
    the gradient with respect to this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int):
        rank, world = rank_world()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        ctx.dim, ctx.rank, ctx.n = dim, rank, x.shape[dim]
        return torch.cat(parts, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad.narrow(ctx.dim, ctx.rank * ctx.n, ctx.n), None


def gather_cells(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The global batch of ``x`` (its cells along ``dim``: W·n there instead of n), with gradients;
    ``x`` itself with one process."""
    if rank_world()[1] == 1:
        return x
    return _GatherCells.apply(x, dim)


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks (no gradient); ``x`` with one process."""
    if rank_world()[1] == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def draw_cells(shape: Sequence[int], dim: int, draw: Callable[[tuple], torch.Tensor]) -> torch.Tensor:
    """A per-cell random tensor of ``shape`` (cells along ``dim``), as the 1-process run draws it.

    ``draw(shape)`` makes the draw. With W ranks it is called with the global shape (W times the cells
    along ``dim``) and this rank's slice is returned, so the generator advances as in the 1-process
    run and the rank's cells get the numbers the 1-process run gives them.
    """
    rank, world = rank_world()
    shape = tuple(int(s) for s in shape)
    if world == 1:
        return draw(shape)
    n = shape[dim]
    full = draw(shape[:dim] + (n * world,) + shape[dim + 1 :])
    return full.narrow(dim, rank * n, n).contiguous()


class BatchNorm1d(torch.nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training-time statistics are those of the global batch (same
    parameters, buffers and state-dict keys); plain BatchNorm1d with one process or in eval mode.

    ``nn.SyncBatchNorm`` does the same on CUDA only; this version also runs (and is tested) on CPU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank, world = rank_world()
        if world == 1 or not self.training:
            return super().forward(x)
        n = x.shape[0]
        # every rank normalises the identical gathered batch (identical running statistics too)
        return super().forward(gather_cells(x, 0)).narrow(0, rank * n, n)


__all__ = ["rank_world", "cells_per_rank", "local_cells", "gather_cells", "global_sum", "draw_cells", "BatchNorm1d"]
