"""Spaces and distances: the shared reference space, a latent's scale, exact W1."""

from __future__ import annotations

import math
import warnings

import numpy as np

from scjepa.errors import InputError, SolverError
from scjepa.tasks.bridge.plans import uniform_weights

_W1_ITER = 100_000_000


def w1(x: np.ndarray, y: np.ndarray, *, max_cells: int | None = None, rng: np.random.Generator | None = None,
       num_iter_max: int = _W1_ITER) -> float:
    """Exact W1 between two point clouds: ``ot.emd2`` with Euclidean (not squared) cost, uniform weights.

    With ``max_cells``, each side is first subsampled (without replacement) to at most that many
    points (seeded by ``rng``): the network simplex is O(n³) and 10k x 10k takes minutes here.
    """
    import ot

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if max_cells is not None:
        rng = rng or np.random.default_rng(0)
        if len(x) > max_cells:
            x = x[rng.choice(len(x), max_cells, replace=False)]
        if len(y) > max_cells:
            y = y[rng.choice(len(y), max_cells, replace=False)]
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise SolverError("W1: the point clouds have NaN/inf entries")
    M = ot.dist(x, y, metric="euclidean")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        val, lg = ot.emd2(uniform_weights(len(x)), uniform_weights(len(y)), M, numItermax=int(num_iter_max), log=True)
    if lg.get("warning"):
        raise SolverError(f"W1 (ot.emd2, {len(x)}x{len(y)}): {lg['warning']}")
    return float(val)


def reference_space(X, n_components: int = 5, whiten: bool = True, seed: int = 0) -> np.ndarray:
    """PCA coordinates (n, n_components) of log-normalised expression X (dense or sparse).

    Sparse input is centred implicitly (sklearn's arpack solver). ``whiten`` scales each PC to unit
    variance (StandardScaler on the scores, as TorchCFM's 5-D protocol).
    """
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    n, p = X.shape
    k = int(min(n_components, n - 1, p - (1 if sp.issparse(X) else 0)))
    if k < 1:
        raise InputError(f"cannot compute {n_components} reference PCs from {n} cells x {p} genes")
    if sp.issparse(X):
        pca = PCA(n_components=k, svd_solver="arpack", random_state=seed)
        Z = pca.fit_transform(X.astype(np.float64))
    else:
        pca = PCA(n_components=k, random_state=seed)
        Z = pca.fit_transform(np.asarray(X, np.float64))
    if whiten:
        sd = Z.std(axis=0)
        Z = Z / np.where(sd > 0, sd, 1.0)
    return Z


def latent_scale(Z: np.ndarray) -> float:
    """ŝ = √tr Cov(Z): the overall spread that σ is measured in."""
    Z = np.asarray(Z, np.float64)
    s = float(math.sqrt(max(Z.var(axis=0).sum(), 0.0)))
    if not s > 0:
        raise InputError("the latent has zero variance (all cells embedded at one point)")
    return s


def noise_factor(Z: np.ndarray, R: np.ndarray) -> np.ndarray:
    """L = (BBᵀ)^½ (d_R, d_R) for the least-squares linear map B: centred Z -> centred R.

    Latent noise σξ (ξ ~ N(0, I)) maps to σBξ ~ N(0, σ²BBᵀ), drawn as σLη. B is the minimum-norm
    solution (``lstsq``), so constant latent dimensions get zero weight; BBᵀ, hence L, does not
    change when the latent is rotated, and scales by 1/α² when it is multiplied by α, which cancels
    the α in σ = c·ŝ.
    """
    Z = np.asarray(Z, np.float64)
    R = np.asarray(R, np.float64)
    Zc, Rc = Z - Z.mean(axis=0), R - R.mean(axis=0)
    # rcond relative to the largest singular value: constant or numerically dead directions drop out
    Bt, *_ = np.linalg.lstsq(Zc, Rc, rcond=1e-10)  # (d_Z, d_R) = Bᵀ
    C = Bt.T @ Bt
    w, V = np.linalg.eigh((C + C.T) / 2)
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def w2(x: np.ndarray, y: np.ndarray, *, num_iter_max: int = _W1_ITER) -> float:
    """Exact W2: √``ot.emd2`` with the squared Euclidean cost, uniform weights."""
    import ot

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    M = ot.dist(x, y, metric="sqeuclidean")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        val, lg = ot.emd2(uniform_weights(len(x)), uniform_weights(len(y)), M, numItermax=int(num_iter_max), log=True)
    if lg.get("warning"):
        raise SolverError(f"W2 (ot.emd2, {len(x)}x{len(y)}): {lg['warning']}")
    return float(math.sqrt(max(val, 0.0)))


#: CellOT's RBF-MMD bandwidths (scripts/evaluate.py): the MMD is averaged over these γ
MMD_GAMMAS = tuple(float(g) for g in np.logspace(1, -3, num=50))


def mmd_rbf(x: np.ndarray, y: np.ndarray, gammas=MMD_GAMMAS) -> float:
    """CellOT's MMD: mean over γ of mean k(x,x') + mean k(y,y') − 2 mean k(x,y), k = exp(−γ‖·‖²) (V-statistic)."""
    import ot

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    dxx, dyy, dxy = ot.dist(x, x), ot.dist(y, y), ot.dist(x, y)
    vals = [np.exp(-g * dxx).mean() + np.exp(-g * dyy).mean() - 2 * np.exp(-g * dxy).mean() for g in gammas]
    return float(np.mean(vals))


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased energy distance 2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖ (U-statistics: 0 in expectation when the laws agree).

    W1 between two finite samples of one law has a positive floor (~n^(−1/d)) that hides a small
    spread mismatch; this statistic has none, so it is what σ is selected on (docs/BRIDGE.md).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise InputError("energy distance needs >= 2 points per side")
    return float(2 * _mean_dist(x, y) - _mean_dist(x, x) * n / (n - 1) - _mean_dist(y, y) * m / (m - 1))


def _mean_dist(x: np.ndarray, y: np.ndarray, chunk: int = 2048) -> float:
    """Mean Euclidean distance over all pairs, in row blocks (O(chunk · len(y)) memory)."""
    import ot

    total = 0.0
    for lo in range(0, len(x), chunk):
        total += float(np.sqrt(np.maximum(ot.dist(x[lo:lo + chunk], y), 0.0)).sum())
    return total / (len(x) * len(y))
