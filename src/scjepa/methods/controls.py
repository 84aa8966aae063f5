"""Controls: embeddings that give every score a floor and a ceiling.

Benchmark platforms read a method's score against what no representation (the floor) and a perfect one
(the ceiling) would get on the same cells. A control is a per-dataset "method" (fitted on each dataset it
embeds, like Harmony) of one of these kinds:

========================  ==========  =========================================================================
kind                      role        embedding (N, dim) float32
========================  ==========  =========================================================================
``random``                negative    i.i.d. N(0, 1): carries nothing about the cells
``unintegrated``          negative    the dataset's own first ``dim`` PCs of log-normalised expression: scIB's
                                      "unintegrated" baseline (batch effects left in)
``labels``                positive    the true cell type as a unit vector fixed by its name (the same in every
                                      dataset, so it also transfers from a reference),
                                      plus Gaussian noise of typical length ``noise`` (sd noise/sqrt(dim) per
                                      dimension; centres are sqrt(2) apart): types separate, batches do not
``true_state``            positive    the generator's own low-dimensional state ``obsm["X_true"]`` (synthetic data;
                                      kept by the dataset option ``keep_obsm: [X_true]``), as is: the bridge's
                                      ceiling, where the dynamics were generated
========================  ==========  =========================================================================

Label-based controls read every cell's label, test cells included: that is what makes them a ceiling, and
why they are marked as controls and never ranked with the methods.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass

import numpy as np

from scjepa.errors import InputError

log = logging.getLogger(__name__)

KINDS = ("random", "unintegrated", "labels", "true_state")
NEGATIVE, POSITIVE = "negative", "positive"
ROLE = {"random": NEGATIVE, "unintegrated": NEGATIVE, "labels": POSITIVE, "true_state": POSITIVE}


def _rng(seed: int, dataset: str) -> np.random.Generator:
    """One stream per (seed, dataset): the same control of one dataset is the same every run."""
    digest = hashlib.sha256(f"{seed}:{dataset}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass
class Control:
    """A control embedding; ``fit_transform(adata)`` like the other per-dataset methods."""

    kind: str = "random"
    dim: int = 64
    noise: float = 0.5  # typical length of the labels control's noise vector; class centres are sqrt(2) apart
    label_key: str = "cell_type"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown control kind '{self.kind}' (one of {', '.join(KINDS)})", key="kind")
        if int(self.dim) < 1:
            raise InputError(f"dim must be >= 1, got {self.dim}", key="dim")
        if float(self.noise) < 0:
            raise InputError(f"noise must be >= 0, got {self.noise}", key="noise")

    @property
    def role(self) -> str:
        return ROLE[self.kind]

    def get_params(self) -> dict:
        return dataclasses.asdict(self)

    def fit_transform(self, adata, *, path=None) -> np.ndarray:
        dataset = str(adata.uns.get("dataset", "")) if hasattr(adata, "uns") else ""
        rng = _rng(int(self.seed), dataset)
        n, dim = adata.n_obs, int(self.dim)
        if self.kind == "random":
            return rng.standard_normal((n, dim)).astype(np.float32)
        if self.kind == "true_state":
            if "X_true" not in getattr(adata, "obsm", {}):
                raise InputError("the true_state control needs obsm['X_true'] (a synthetic dataset with "
                                 "keep_obsm: [X_true]); obsm has " + str(list(getattr(adata, "obsm", {}))),
                                 path=path, key="obsm")
            return np.asarray(adata.obsm["X_true"], dtype=np.float32)
        if self.kind == "unintegrated":
            from scjepa.methods.harmony import pca

            k = int(min(dim, min(adata.n_obs, adata.n_vars) - 1))
            if k < 1:
                raise InputError(f"too few cells or genes for PCA ({adata.shape})", path=path, key="X")
            return np.asarray(pca(adata.X, k, seed=int(self.seed)), dtype=np.float32)
        return label_embedding(_labels(adata, self.label_key, path), dim, float(self.noise), rng, int(self.seed))

    def save(self, model_dir, *, method: str | None = None) -> None:
        """A control has no fitted state: its directory records what it is (hparams.json)."""
        import json
        from pathlib import Path

        from scjepa.io import atomic_path

        with atomic_path(Path(model_dir), is_dir=True) as tmp:
            hp = {"family": "control", "method": method or "control", "role": self.role, **self.get_params()}
            (tmp / "hparams.json").write_text(json.dumps(hp, indent=2, sort_keys=True) + "\n")


def _labels(adata, key: str, path) -> np.ndarray:
    if key not in adata.obs.columns:
        raise InputError(f"the labels control needs the column '{key}'; obs has {list(adata.obs.columns)}",
                         path=path, column=key)
    return adata.obs[key].astype(str).to_numpy()


def label_centre(label: str, dim: int, seed: int = 0) -> np.ndarray:
    """A unit vector for one cell-type name, the same in every dataset (so a positive control transfers
    between datasets); different names are nearly orthogonal in dim >= 32 (|cos| ~ 1/sqrt(dim))."""
    v = _rng(seed, f"label:{label}").standard_normal(dim)
    return v / np.linalg.norm(v)


def label_embedding(labels: np.ndarray, dim: int, noise: float, rng: np.random.Generator, seed: int = 0) -> np.ndarray:
    """Each cell's type as a unit vector (:func:`label_centre`; centres about sqrt(2) apart) plus isotropic
    noise of sd ``noise / sqrt(dim)`` per dimension, so its typical length is ``noise`` whatever ``dim``.
    Returns (N, dim) float32."""
    classes, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    centres = np.stack([label_centre(c, dim, seed) for c in classes])
    Z = centres[codes] + (noise / np.sqrt(dim)) * rng.standard_normal((len(codes), dim))
    return Z.astype(np.float32)
