"""PCA baseline: 64 components fitted on the pretraining corpus, incrementally.

sklearn's ``IncrementalPCA`` sees the store one mini-batch at a time, so memory stays bounded at
corpus scale (ssl_in_scg used dask-ml's IncrementalPCA for the same reason).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import IncrementalPCA

from scjepa.io import atomic_path


@dataclass
class PCAConfig:
    n_components: int = 64
    batch_size: int = 2048  # cells per partial_fit
    max_cells: int | None = None  # stop after this many corpus cells (None = one full pass)


class PCAMethod:
    """sklearn-style: ``fit(loader)``, ``transform(X)``; learned state ends in ``_``."""

    family = "pca"
    is_torch = False  # fitted by IncrementalPCA, not the torch engine

    def __init__(self, **hparams):
        hparams = {k: v for k, v in hparams.items() if k not in ("family", "method", "serves", "encoder")}
        self.config = PCAConfig(**hparams)
        self.gene_ids_: list[str] | None = None

    def fit(self, train, val=None, out_dir=None, gene_ids=None):
        from tqdm.auto import tqdm

        cfg = self.config
        ipca = IncrementalPCA(n_components=cfg.n_components)
        seen, buf = 0, []
        bar = tqdm(total=cfg.max_cells or train.n_cells, desc="pca", unit="cells")
        for batch in train:
            x = batch["x"].numpy()
            buf.append(x)
            if sum(len(b) for b in buf) >= max(cfg.batch_size, cfg.n_components):
                ipca.partial_fit(np.concatenate(buf))
                seen += sum(len(b) for b in buf)
                bar.update(sum(len(b) for b in buf))
                buf = []
            if cfg.max_cells is not None and seen >= cfg.max_cells:
                break
        if buf and sum(len(b) for b in buf) >= cfg.n_components:
            ipca.partial_fit(np.concatenate(buf))
        bar.close()
        if not hasattr(ipca, "components_"):
            raise ValueError(f"PCA needs at least {cfg.n_components} cells to fit")
        self.mean_ = ipca.mean_.astype(np.float32)
        self.components_ = ipca.components_.astype(np.float32)
        self.explained_variance_ratio_ = ipca.explained_variance_ratio_.astype(np.float32)
        self.gene_ids_ = list(gene_ids) if gene_ids is not None else getattr(train, "gene_ids", None)
        if out_dir is not None:
            self.save(out_dir)
        return self

    def transform(self, X) -> np.ndarray:
        out = np.empty((X.shape[0], self.components_.shape[0]), dtype=np.float32)
        for s in range(0, X.shape[0], 8192):
            xb = X[s : s + 8192]
            xb = xb.toarray() if sp.issparse(xb) else np.asarray(xb)
            out[s : s + 8192] = (xb.astype(np.float32) - self.mean_) @ self.components_.T
        return out

    def save(self, out_dir) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "pca.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, mean=self.mean_, components=self.components_,
                         explained_variance_ratio=self.explained_variance_ratio_)
        if self.gene_ids_ is not None:
            with atomic_path(out_dir / "genes.txt") as tmp:
                tmp.write_text("\n".join(self.gene_ids_) + "\n")
        hp = {"family": self.family, **asdict(self.config), "n_genes": int(self.components_.shape[1]),
              "gene_ids_file": "genes.txt"}
        with atomic_path(out_dir / "hparams.json") as tmp:
            tmp.write_text(json.dumps(hp, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, out_dir) -> "PCAMethod":
        out_dir = Path(out_dir)
        hp = json.loads((out_dir / "hparams.json").read_text())
        self = cls(**{k: v for k, v in hp.items() if k in PCAConfig.__dataclass_fields__})
        with np.load(out_dir / "pca.npz") as z:
            self.mean_, self.components_ = z["mean"], z["components"]
            self.explained_variance_ratio_ = z["explained_variance_ratio"]
        genes = out_dir / "genes.txt"
        self.gene_ids_ = genes.read_text().split() if genes.exists() else None
        return self
