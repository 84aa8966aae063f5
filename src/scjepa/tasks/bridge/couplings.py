"""Couplings between snapshots: the static Schrödinger bridge (:func:`bridge_coupling`), dense or mini-batch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from scjepa.errors import InputError, SolverError
from scjepa.tasks.bridge.plans import entropic_plan, exact_plan, sq_euclidean_cost


@dataclass
class Coupling:
    """A coupling between n0 source and n1 target points, dense or block-diagonal.

    ``blocks``: list of ``(rows, cols, P)``; ``P`` (len(rows), len(cols)) carries global mass (all
    blocks sum to 1); rows partition 0..n0-1 and cols partition 0..n1-1. A dense plan is one block,
    mini-batch OT gives several. ``P`` is a float64 ndarray, or a scipy CSR matrix for exact plans
    (at most n0 + n1 − 1 non-zeros: 25 mini-batch blocks of 2000² would otherwise hold 0.8 GB).
    """

    n0: int
    n1: int
    blocks: list
    info: dict = field(default_factory=dict)

    @property
    def dense(self) -> bool:
        return len(self.blocks) == 1

    def to_dense(self) -> np.ndarray:
        P = np.zeros((self.n0, self.n1))
        for rows, cols, B in self.blocks:
            P[np.ix_(rows, cols)] = B.toarray() if hasattr(B, "toarray") else B
        return P

    @staticmethod
    def _row_sums(B) -> np.ndarray:
        return np.asarray(B.sum(axis=1)).ravel()

    def row_masses(self) -> np.ndarray:
        out = np.zeros(self.n0)
        for rows, _, B in self.blocks:
            out[rows] = self._row_sums(B)
        return out

    def col_masses(self) -> np.ndarray:
        out = np.zeros(self.n1)
        for _, cols, B in self.blocks:
            out[cols] = np.asarray(B.sum(axis=0)).ravel()
        return out

    def sample_targets(self, rng: np.random.Generator, chunk: int = 1024) -> np.ndarray:
        """j_i ~ π(i, ·) / π(i, ·).sum() for every source i: (n0,) int64."""
        out = np.empty(self.n0, dtype=np.int64)
        for rows, cols, B in self.blocks:
            u = rng.random(len(rows))
            if hasattr(B, "indptr"):  # CSR: inverse CDF on each row's non-zeros
                B = B.tocsr()
                tot = self._row_sums(B)
                if np.any(tot <= 0):
                    raise SolverError("a source point carries no mass in the plan (degenerate plan)")
                cs = np.cumsum(B.data)
                before = np.concatenate([[0.0], cs])[B.indptr[:-1]]
                pos = np.searchsorted(cs, before + u * tot, side="right")
                pos = np.clip(pos, B.indptr[:-1], B.indptr[1:] - 1)
                out[rows] = cols[B.indices[pos]]
                continue
            for lo in range(0, len(rows), chunk):
                cdf = np.cumsum(B[lo:lo + chunk], axis=1)
                tot = cdf[:, -1:]
                if np.any(tot <= 0):
                    raise SolverError("a source point carries no mass in the plan (degenerate plan)")
                pick = (cdf < u[lo:lo + chunk, None] * tot).sum(axis=1)
                out[rows[lo:lo + chunk]] = cols[np.minimum(pick, len(cols) - 1)]
        return out

    def conditional_mean(self, F: np.ndarray) -> np.ndarray:
        """E[F_j | i] under the plan: (n0, k) = diag(1/π1) π F (barycentric projection, pull-back)."""
        F = np.asarray(F, np.float64)
        out = np.zeros((self.n0,) + F.shape[1:])
        for rows, cols, B in self.blocks:
            r = self._row_sums(B).reshape((-1,) + (1,) * (F.ndim - 1))
            out[rows] = np.asarray(B @ F[cols]) / r
        return out

    def push_weights(self, W: np.ndarray) -> np.ndarray:
        """Weights over sources (k, n0) -> over targets (k, n1): W diag(1/π1) π (row-stochastic push)."""
        W = np.atleast_2d(np.asarray(W, np.float64))
        out = np.zeros((W.shape[0], self.n1))
        for rows, cols, B in self.blocks:
            out[:, cols] += np.asarray((B.T @ (W[:, rows] / self._row_sums(B)[None, :]).T).T)
        return out


def bridge_coupling(x0: np.ndarray, x1: np.ndarray, sigma: float, dt: float = 1.0, *,
                    max_dense_cells: int = 10000, max_exact_cells: int = 5000, batch_size: int = 2048, seed: int = 0,
                    solver: str = "sinkhorn_log", tol: float = 1e-3, num_iter_max: int = 20000,
                    warmstart: "Coupling | None" = None) -> Coupling:
    """Static Schrödinger bridge coupling between snapshots x0 (n0, d) and x1 (n1, d).

    σ > 0: entropic plan with ε = 2σ²Δt on the squared Euclidean cost (σ in the units of x, Δt in
    time units); σ = 0: the exact plan (McCann interpolation). Uniform weights. Above
    ``max_dense_cells`` (σ > 0) / ``max_exact_cells`` (σ = 0) cells per side: mini-batch OT over a
    seeded partition into ⌈max(n0, n1) / batch_size⌉ matched batches. ``warmstart``: an entropic
    coupling of the same snapshots (same partition) whose dual potentials start the solver.
    """
    import scipy.sparse as sp

    x0 = np.asarray(x0, np.float64)
    x1 = np.asarray(x1, np.float64)
    if x0.ndim != 2 or x1.ndim != 2 or x0.shape[1] != x1.shape[1]:
        raise InputError(f"snapshots must be (n, d) arrays of the same d; got {x0.shape} and {x1.shape}")
    if not (np.all(np.isfinite(x0)) and np.all(np.isfinite(x1))):
        raise SolverError("the snapshot coordinates have NaN/inf entries; the cost is undefined")
    if sigma < 0 or not math.isfinite(sigma) or dt <= 0:
        raise ValueError(f"need sigma >= 0 and dt > 0, got sigma={sigma}, dt={dt}")
    n0, n1 = len(x0), len(x1)
    eps = 2.0 * sigma**2 * dt
    if max(n0, n1) <= (max_dense_cells if eps > 0 else max_exact_cells):
        parts = [(np.arange(n0), np.arange(n1))]
    else:
        nb = int(math.ceil(max(n0, n1) / batch_size))
        rng = np.random.default_rng(seed)
        parts = list(zip(np.array_split(rng.permutation(n0), nb), np.array_split(rng.permutation(n1), nb)))
    warm = None
    if warmstart is not None and warmstart.info.get("potentials") and len(warmstart.blocks) == len(parts):
        warm = warmstart.info["potentials"]
    blocks, infos = [], []
    for p, (rows, cols) in enumerate(parts):
        M = sq_euclidean_cost(x0[rows], x1[cols])
        a = np.full(len(rows), 1.0 / n0)
        b = np.full(len(cols), (len(rows) / n0) / len(cols))  # the block's mass, spread over its targets
        if eps == 0.0:
            P, info = exact_plan(M, a, b, tol=tol)
            P = sp.csr_matrix(P)
        else:
            ws = warm[p] if warm is not None and warm[p] is not None and warm[p][2] > eps else None
            P, info = entropic_plan(M, eps, a, b, method=solver, tol=tol, num_iter_max=num_iter_max, warmstart=ws)
        blocks.append((rows, cols, P))
        infos.append(info)
    info = {
        "sigma": float(sigma), "dt": float(dt), "eps": eps, "n_blocks": len(blocks),
        "iterations": sum(i["iterations"] or 0 for i in infos),
        "max_col_error": max(i["col_error"] for i in infos),
        "potentials": [i.get("potentials") for i in infos] if eps > 0 else None,
    }
    return Coupling(n0, n1, blocks, info)
