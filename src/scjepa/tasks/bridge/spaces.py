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
