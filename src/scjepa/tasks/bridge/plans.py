"""Optimal-transport plans between two point clouds: exact (network simplex) and entropic (Sinkhorn).

Every plan is checked (:func:`check_coupling`): a non-converged or degenerate plan raises
:class:`~scjepa.errors.SolverError`; it is never replaced by a uniform one.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

from scjepa.errors import SolverError

_EMD_ITER = 100_000_000


def sq_euclidean_cost(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Squared Euclidean cost (n0, n1), float64, clipped at 0 (no ½: ε = 2σ²Δt matches it)."""
    import ot

    x0 = np.asarray(x0, dtype=np.float64)
    x1 = np.asarray(x1, dtype=np.float64)
    M = ot.dist(x0, x1, metric="sqeuclidean")
    np.maximum(M, 0.0, out=M)
    return M


def uniform_weights(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def check_coupling(P: np.ndarray, a: np.ndarray, b: np.ndarray, tol: float, what: str) -> dict:
    """Raise SolverError unless P is a finite, non-negative coupling of (a, b) within ``tol``.

    Errors are L1: |ΣP − Σa|, ‖P1 − a‖₁, ‖Pᵀ1 − b‖₁ (the mass a plan puts in the wrong place).
    Returns ``{"mass_error", "row_error", "col_error"}``.
    """
    if not np.all(np.isfinite(P)):
        raise SolverError(f"{what}: the plan has {int((~np.isfinite(P)).sum())} NaN/inf entries (numerical failure)")
    if P.size and float(P.min()) < -1e-12:
        raise SolverError(f"{what}: the plan has negative entries (min {float(P.min()):.3g})")
    mass = float(P.sum())
    mass_err = abs(mass - float(a.sum()))
    row_err = float(np.abs(P.sum(axis=1) - a).sum())
    col_err = float(np.abs(P.sum(axis=0) - b).sum())
    if mass_err > tol:
        raise SolverError(
            f"{what}: the plan carries mass {mass:.6g} instead of {float(a.sum()):.6g} "
            "(degenerate plan: underflow or divergence)"
        )
    if row_err > tol or col_err > tol:
        raise SolverError(
            f"{what}: did not converge — marginal errors (L1) {row_err:.3g} (rows), {col_err:.3g} (columns) "
            f"exceed tol {tol:g}; raise num_iter_max or σ"
        )
    return {"mass_error": mass_err, "row_error": row_err, "col_error": col_err}


def exact_plan(M: np.ndarray, a: np.ndarray | None = None, b: np.ndarray | None = None, *, tol: float = 1e-3,
               num_iter_max: int = _EMD_ITER) -> tuple[np.ndarray, dict]:
    """Exact OT plan (``ot.emd``, network simplex) for cost M; checked like every plan."""
    import ot

    M = np.ascontiguousarray(M, dtype=np.float64)
    n0, n1 = M.shape
    a = uniform_weights(n0) if a is None else np.asarray(a, np.float64)
    b = uniform_weights(n1) if b is None else np.asarray(b, np.float64)
    what = f"exact OT (ot.emd, {n0}x{n1})"
    if not np.all(np.isfinite(M)):
        raise SolverError(f"{what}: the cost matrix has NaN/inf entries")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # its warning is in lg and raised below
        G, lg = ot.emd(a, b, M, numItermax=int(num_iter_max), log=True)
    if lg.get("warning"):
        raise SolverError(f"{what}: {lg['warning']} (result code {lg.get('result_code')})")
    info = check_coupling(G, a, b, tol, what)
    info.update(solver="emd", eps=0.0, iterations=None)
    return G, info


def entropic_plan(M: np.ndarray, eps: float, a: np.ndarray | None = None, b: np.ndarray | None = None, *,
                  method: str = "sinkhorn_log", tol: float = 1e-3, num_iter_max: int = 20000,
                  eps_scaling: bool = True, warmstart: tuple | None = None) -> tuple[np.ndarray, dict]:
    """Entropic OT plan argmin ⟨π, M⟩ + ε Σ π log π over couplings of (a, b); POT ``ot.sinkhorn``.

    M (n0, n1) float64 -> (P (n0, n1), info). Torch float64 backend, one thread below 2000 x 2000;
    ε-scaling from 0.3·mean(M), or from ``warmstart = (log_u, log_v, ε_of_them)``; ``tol`` bounds
    the L1 column error (why each: docs/BRIDGE.md, "Solvers"). ``info["potentials"]`` =
    (log_u, log_v, ε) for the next warm start. Checked by :func:`check_coupling`.
    """
    import ot

    M = np.ascontiguousarray(M, dtype=np.float64)
    n0, n1 = M.shape
    a = uniform_weights(n0) if a is None else np.asarray(a, np.float64)
    b = uniform_weights(n1) if b is None else np.asarray(b, np.float64)
    what = f"Sinkhorn ({method}, eps={eps:.4g}, {n0}x{n1})"
    if not np.all(np.isfinite(M)):
        raise SolverError(f"{what}: the cost matrix has NaN/inf entries")
    if not (math.isfinite(eps) and eps > 0):
        raise SolverError(f"{what}: eps must be a positive number")
    import torch

    Mx, ax, bx = torch.from_numpy(M), torch.from_numpy(a), torch.from_numpy(b)
    stop = tol / math.sqrt(n1)
    schedule = [eps]
    u = v = prev = None
    if method == "sinkhorn_log" and warmstart is not None:
        u, v, prev = warmstart
        u, v = torch.as_tensor(np.asarray(u, np.float64)), torch.as_tensor(np.asarray(v, np.float64))
        e, schedule = float(prev), []
    elif eps_scaling and method == "sinkhorn_log" and eps < 0.03 * float(M.mean()):
        e, schedule = 0.3 * float(M.mean()), []
    if not schedule:
        while e * 0.5 > eps:
            e *= 0.5
            schedule.append(e)
        schedule.append(eps)
    iters = 0
    P = None
    with warnings.catch_warnings(), _torch_threads(1 if n0 * n1 < 4_000_000 else None):
        warnings.simplefilter("ignore", UserWarning)  # non-convergence is checked below
        for stage, e in enumerate(schedule):
            last = stage == len(schedule) - 1
            ws = None if u is None else (u * (prev / e), v * (prev / e))
            P, lg = ot.sinkhorn(ax, bx, Mx, e, method=method, numItermax=int(num_iter_max) if last else 10,
                                stopThr=stop, log=True, warn=False, warmstart=ws)
            iters += int(lg.get("niter", 0)) + 1
            u, v, prev = lg.get("log_u"), lg.get("log_v"), e
    P = P.numpy() if hasattr(P, "numpy") else np.asarray(P)
    info = check_coupling(P, a, b, tol, f"{what} after {iters} iterations")
    pot = None
    if u is not None:
        pot = (np.asarray(u.numpy() if hasattr(u, "numpy") else u), np.asarray(v.numpy() if hasattr(v, "numpy") else v), float(eps))
    info.update(solver=method, eps=float(eps), iterations=iters, potentials=pot)
    return P, info


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Temporarily set torch's intra-op thread count (None: leave it)."""
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
