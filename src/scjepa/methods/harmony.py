"""Harmony baseline (harmonypy): PCA of the log-normalised expression, then Harmony on ``obs["batch"]``.

Like scVI, Harmony is transductive: it is fitted on each evaluation dataset and its corrected PCs are the
embedding (this repository's docs/PROTOCOL.md, section 2.4). Steps:

1. PCA with ``n_pcs`` components (default 50, clamped to ``min(n_cells, n_genes) - 1``) of the processed
   ``X`` (already log1p of counts normalised to 1e4), zero-centred, no per-gene scaling, all genes
   (scanpy ``pp.pca``; sparse input is centred implicitly, never densified).
2. ``harmonypy.run_harmony`` on the PCs with ``obs[batch_key]`` as the only covariate.

harmonypy API notes (checked against 2.1.0, the C++/Armadillo backend): ``run_harmony(data_mat,
meta_data, vars_use, theta=2, sigma=0.1, nclust=min(N/30, 100), max_iter_harmony=10, random_state=0,
ncores=0, ...)``. ``data_mat`` may be cells x PCs or PCs x cells; harmonypy decides by which dimension
equals the number of cells, which is ambiguous when ``n_pcs == n_cells``, so we always pass PCs x cells
(second dimension = cells, which it checks first). In 2.x ``Z_corr`` is **cells x PCs**; in the old pure
Python 0.0.x it was PCs x cells; we orient the result by the cell count either way. Results do not depend
on ``ncores`` (harmonypy docs).

The embedding width is ``n_pcs`` (50 by default), not 64: Harmony corrects PCs and does not choose a width.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scjepa.errors import InputError
from scjepa.io import atomic_path
from scjepa.methods.per_dataset import check_batch_column

log = logging.getLogger(__name__)


def pca(X, n_comps: int, seed: int = 0) -> np.ndarray:
    """Zero-centred PCA scores (n_cells, n_comps) float64 of dense or sparse ``X`` (no densifying)."""
    import scanpy as sc

    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
    else:
        X = np.asarray(X, dtype=np.float32)
    scores = sc.pp.pca(X, n_comps=int(n_comps), zero_center=True, random_state=int(seed))
    return np.asarray(scores, dtype=np.float64)


@dataclass
class HarmonyMethod:
    """PCA + Harmony (sklearn-like: hyper-parameters in the constructor, learned state ends in ``_``)."""

    n_pcs: int = 50
    theta: float = 2.0
    sigma: float = 0.1
    lamb: float | None = None  # None: harmonypy estimates it per cluster (R harmony 1.x behaviour)
    nclust: int | None = None  # None: min(N / 30, 100)
    max_iter_harmony: int = 10
    max_iter_kmeans: int = 4  # harmonypy 2.x default (R harmony 1.x uses 20)
    epsilon_harmony: float = 1e-2
    epsilon_cluster: float = 1e-3
    block_size: float = 0.05
    ncores: int = 0  # 0 = harmonypy's choice (one per physical core available); results do not depend on it
    batch_key: str = "batch"
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.n_pcs) < 1:
            raise InputError(f"n_pcs must be >= 1, got {self.n_pcs}", key="n_pcs")

    def get_params(self) -> dict:
        return dataclasses.asdict(self)

    def fit_transform(self, adata, *, path=None) -> np.ndarray:
        """PCA of ``adata.X`` then Harmony on ``obs[batch_key]``; returns (n_cells, n_pcs_) float32."""
        import harmonypy

        batch = check_batch_column(adata, self.batch_key, path=path)
        X = adata.X
        n = adata.n_obs
        data = X.data if sp.issparse(X) else np.asarray(X)
        if not np.isfinite(data).all():
            raise InputError("X contains NaN or inf", path=path, key="X")
        n_pcs = int(min(int(self.n_pcs), min(adata.n_obs, adata.n_vars) - 1))
        if n_pcs < 1:
            raise InputError(f"too few cells or genes for PCA ({adata.shape})", path=path, key="X")
        if n_pcs < int(self.n_pcs):
            log.warning("Harmony: n_pcs reduced from %d to %d (data shape %s)", self.n_pcs, n_pcs, adata.shape)
        pcs = pca(X, n_pcs, seed=self.seed)
        self.pcs_ = pcs.astype(np.float32)
        self.n_pcs_ = n_pcs
        self.batches_ = list(batch.categories)

        if len(self.batches_) < 2:
            log.warning("Harmony: only one batch in column '%s'; returning uncorrected PCs", self.batch_key)
            self.embedding_ = self.pcs_.copy()
            return self.embedding_

        meta = pd.DataFrame({"batch": batch}, index=np.arange(n).astype(str))
        kwargs = dict(
            theta=float(self.theta),
            lamb=self.lamb,
            sigma=float(self.sigma),
            nclust=None if self.nclust is None else int(self.nclust),
            max_iter_harmony=int(self.max_iter_harmony),
            max_iter_kmeans=int(self.max_iter_kmeans),
            epsilon_cluster=float(self.epsilon_cluster),
            epsilon_harmony=float(self.epsilon_harmony),
            block_size=float(self.block_size),
            verbose=False,
            random_state=int(self.seed),
            ncores=int(self.ncores),
        )
        accepted = inspect.signature(harmonypy.run_harmony).parameters
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        # PCs x cells: the orientation harmonypy checks first, unambiguous even when n_pcs == n_cells
        ho = harmonypy.run_harmony(np.ascontiguousarray(pcs.T), meta, ["batch"], **kwargs)
        Z = np.asarray(ho.Z_corr)
        if Z.shape == (n, n_pcs):
            pass
        elif Z.shape == (n_pcs, n):  # harmonypy < 2: d x N
            Z = Z.T
        else:
            raise RuntimeError(f"unexpected harmonypy Z_corr shape {Z.shape} for {n} cells x {n_pcs} PCs")
        Z = np.ascontiguousarray(Z, dtype=np.float32)
        if not np.isfinite(Z).all():
            raise FloatingPointError("Harmony produced non-finite coordinates")
        self.embedding_ = Z
        self.objective_ = [float(v) for v in np.ravel(getattr(ho, "objective_harmony", []))]
        return Z

    def transform(self, adata, *, path=None) -> np.ndarray:  # noqa: ARG002
        raise NotImplementedError(
            "Harmony is transductive: it corrects the dataset it is fitted on; use fit_transform per dataset"
        )

    @classmethod
    def load(cls, out_dir, adata=None, *, path=None) -> "HarmonyMethod":
        """The configured method from ``hparams.json``; with ``adata`` it is refitted on it (Harmony keeps
        no state that applies to other data, so ``transform`` stays unavailable)."""
        hp_path = Path(out_dir) / "hparams.json"
        if not hp_path.exists():
            raise InputError("hparams.json is missing; not a saved Harmony directory", path=out_dir)
        hp = json.loads(hp_path.read_text())
        if hp.get("family") != "harmony":
            raise InputError(f"family is {hp.get('family')!r}, not 'harmony'", path=hp_path, key="family")
        names = {f.name for f in dataclasses.fields(cls)}
        obj = cls(**{k: v for k, v in hp.items() if k in names})
        if adata is not None:
            obj.fit_transform(adata, path=path)
        return obj

    def save(self, out_dir, *, method: str | None = None) -> None:
        """Model directory: ``hparams.json`` (family 'harmony') and ``curve.csv`` (Harmony objective per
        iteration). There is nothing else to reload: Harmony is refitted per dataset."""
        if not hasattr(self, "embedding_"):
            raise RuntimeError("HarmonyMethod is not fitted; call fit_transform first")
        with atomic_path(Path(out_dir), is_dir=True) as tmp:
            hp = {
                "family": "harmony",
                "method": method or "harmony",
                "n_pcs_effective": self.n_pcs_,
                "batches": self.batches_,
                **self.get_params(),
            }
            (tmp / "hparams.json").write_text(json.dumps(hp, indent=2, sort_keys=True) + "\n")
            obj = getattr(self, "objective_", [])
            pd.DataFrame({"iteration": np.arange(len(obj)), "objective": obj}).to_csv(
                tmp / "curve.csv", index=False
            )


__all__ = ["HarmonyMethod", "pca"]
