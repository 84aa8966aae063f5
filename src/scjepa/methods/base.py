"""What every method object shares: hyper-parameters, the model directory, and (torch) fit/transform.

A method is sklearn-like: hyper-parameters are constructor keyword arguments (a dataclass per family,
defaults = the paper's), learned state ends in ``_``.

- ``Method``: hyper-parameter handling and the model-directory files every family writes
  (``hparams.json`` with "family", ``genes.txt``). Non-torch families (PCA, scVI, Harmony) can subclass it.
- ``TorchMethod``: a ``Method`` whose network is built by ``build_module`` and trained by
  ``engine.train``; writes ``encoder.pt`` (the shared ``Encoder``) and ``model.pt`` (the whole module).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from scjepa.errors import InputError
from scjepa.io import atomic_path, write_json, write_text

log = logging.getLogger(__name__)

HPARAMS = "hparams.json"
GENES = "genes.txt"
ENCODER = "encoder.pt"
MODEL = "model.pt"
# Keys of hparams.json that describe the fitted model rather than configure a family.
META_KEYS = ("family", "method", "n_genes", "gene_ids_file", "encoder", "classes")


@dataclass
class TrainHParams:
    """Hyper-parameters shared by every torch family (network, optimiser, budget, bookkeeping)."""

    hidden: tuple[int, ...] = (512, 512, 256, 256)  # encoder D -> hidden -> latent (ssl_in_scg / scTab)
    latent: int = 64
    dropout: float = 0.1
    batch_size: int = 1024  # used by whoever builds the loader (``pretrain``)
    max_epochs: int = 10
    max_steps: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    lr_step_epochs: int = 1  # StepLR step size, in epochs
    lr_gamma: float = 0.9
    grad_clip: float | None = None  # max grad norm; None = off
    seed: int = 0
    log_every: int = 50  # steps per curve row
    val_every: int = 500  # steps per val kNN check (also at each epoch end); 0 = epoch ends only
    checkpoint_every: int = 500  # steps per checkpoint (also at each epoch end); 0 = epoch ends only
    val_max_cells: int = 20_000
    knn_k: int = 5
    infer_batch_size: int = 2048
    device: str = "auto"  # "auto" = cuda if available else cpu
    precision: str = "auto"  # "auto"/"bf16": bf16 autocast on CUDA; "fp32": no autocast
    progress: bool = True

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        for name in ("latent", "batch_size", "max_epochs", "log_every", "knn_k", "lr_step_epochs"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"must be ≥ 1 (got {getattr(self, name)})", key=name)
        if not 0 <= self.dropout < 1:
            raise InputError(f"must be in [0, 1) (got {self.dropout})", key="dropout")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise InputError(f"must be auto, bf16 or fp32 (got {self.precision!r})", key="precision")


def make_hparams(cls: type, values: dict[str, Any]):
    """Build a dataclass from a dict, naming the first unknown key (a typo) in the error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"unknown hyper-parameter for {cls.__name__}; known: {sorted(names)}", key=unknown[0])
    return cls(**values)


def to_matrix(X):
    """Accept AnnData-free inputs: dense array-likes or scipy sparse, (N, D)."""
    import scipy.sparse as sp

    if sp.issparse(X):
        return X.tocsr()
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"expected a 2-d matrix (cells x genes), got shape {X.shape}")
    return X


class Method:
    """Base of every family: hyper-parameters in, model directory out."""

    family: ClassVar[str] = ""
    HParams: ClassVar[type] = TrainHParams
    is_torch: ClassVar[bool] = False

    def __init__(self, **hparams):
        self.hparams = make_hparams(self.HParams, hparams)
        self.gene_ids_: list[str] | None = None
        self.n_genes_: int | None = None
        self.method_name: str | None = None

    def get_params(self) -> dict:
        return asdict(self.hparams)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hparams})"

    def fit(self, train_loader, val=None, out_dir=None, *, gene_ids=None, callbacks=()):  # pragma: no cover
        raise NotImplementedError

    def transform(self, X) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _check_fitted(self):
        if self.n_genes_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load_model() first")

    def _set_genes(self, n_genes: int, gene_ids: Sequence[str] | None) -> None:
        if gene_ids is not None:
            gene_ids = [str(g) for g in gene_ids]
            if len(gene_ids) != n_genes:
                raise InputError(f"{len(gene_ids)} gene ids for {n_genes} genes in the data", key="gene_ids")
            if len(set(gene_ids)) != len(gene_ids):
                raise InputError("duplicate gene ids", key="gene_ids")
        self.n_genes_, self.gene_ids_ = int(n_genes), gene_ids

    def model_info(self) -> dict:
        """Extra fitted-state entries for hparams.json (e.g. "encoder", "classes")."""
        return {}

    def save_common(self, out_dir: str | os.PathLike) -> Path:
        """hparams.json (+ genes.txt when gene ids are known)."""
        self._check_fitted()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"family": self.family, "method": self.method_name or self.family, "n_genes": self.n_genes_,
                **self.model_info(), **self.get_params()}
        if self.gene_ids_ is not None:
            meta["gene_ids_file"] = GENES
            write_text("\n".join(self.gene_ids_) + "\n", out_dir / GENES)
        write_json(meta, out_dir / HPARAMS)
        return out_dir

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike) -> "Method":
        """Construct (unfitted) from hparams.json and restore n_genes / gene ids."""
        meta = read_hparams(model_dir)
        obj = cls(**{k: v for k, v in meta.items() if k not in META_KEYS})
        obj.method_name = meta.get("method")
        obj._set_genes(meta["n_genes"], read_genes(model_dir))
        return obj


def read_hparams(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir) / HPARAMS
    if not path.exists():
        raise InputError("no hparams.json: not a model directory", path=model_dir)
    meta = json.loads(path.read_text())
    if "family" not in meta:
        raise InputError("has no 'family'", path=path, key="family")
    return meta


def read_genes(model_dir: str | os.PathLike) -> list[str] | None:
    path = Path(model_dir) / GENES
    if not path.exists():
        return None
    return [g for g in path.read_text().splitlines() if g]


class TorchMethod(Method):
    """A method trained by ``engine.train``. Subclasses implement ``build_module``."""

    is_torch = True

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.module_ = None
        self.curve_: list[dict] = []

    def build_module(self, n_genes: int):  # pragma: no cover
        """Return an nn.Module with ``encoder``, ``loss_terms`` and ``training_step(batch, generator)``."""
        raise NotImplementedError

    def prepare(self, train_loader) -> None:
        """Hook run before ``build_module`` (e.g. read class labels / counts from the loader)."""

    @property
    def encoder(self):
        self._check_fitted()
        return self.module_.encoder

    def fit(self, train_loader, val=None, out_dir=None, *, gene_ids=None, callbacks=()):
        """Train on ``train_loader`` (batches {"x", "y"}; attribute ``n_genes``).

        val: None, (X, labels) or AnnData with obs["cell_type"], for the periodic kNN check.
        out_dir: working directory for checkpoint.pt / curve.csv; an existing checkpoint is resumed.
        gene_ids: the loader's gene ids (default: its ``gene_ids`` attribute, if any).
        """
        import torch

        from scjepa.methods.engine import train

        n_genes = getattr(train_loader, "n_genes", None)
        if n_genes is None:
            n_genes = int(next(iter(train_loader))["x"].shape[1])
        if gene_ids is None:
            gene_ids = getattr(train_loader, "gene_ids", None)
        self._set_genes(n_genes, gene_ids)
        self.prepare(train_loader)
        torch.manual_seed(self.hparams.seed)  # weight init
        self.module_ = self.build_module(self.n_genes_)
        self.curve_ = train(self.module_, train_loader, self.hparams, out_dir=out_dir, val=val,
                            callbacks=callbacks)
        self.module_.eval()
        return self

    def transform(self, X, batch_size: int | None = None) -> np.ndarray:
        """X (N, n_genes) dense or sparse, log1p-normalised -> embedding (N, latent) float32."""
        from scjepa.methods.engine import encode_array

        self._check_fitted()
        X = to_matrix(X)
        if X.shape[1] != self.n_genes_:
            raise InputError(f"X has {X.shape[1]} genes; the model expects {self.n_genes_} "
                             "(align with scjepa.methods.embed_adata)")
        return encode_array(self.module_.encoder, X, batch_size or self.hparams.infer_batch_size)

    def model_info(self) -> dict:
        return {"encoder": self.module_.encoder.hparams()}

    def save(self, out_dir: str | os.PathLike) -> Path:
        """hparams.json, genes.txt, encoder.pt (state dict of the Encoder), model.pt, curve.csv."""
        import torch

        out_dir = self.save_common(out_dir)
        cpu = lambda sd: {k: v.detach().cpu() for k, v in sd.items()}  # noqa: E731
        with atomic_path(out_dir / ENCODER) as tmp:
            torch.save(cpu(self.module_.encoder.state_dict()), tmp)
        with atomic_path(out_dir / MODEL) as tmp:
            torch.save(cpu(self.module_.state_dict()), tmp)
        if self.curve_:
            from scjepa.methods.engine import CURVE, _Curve

            c = _Curve(self.module_.loss_terms)
            c.rows = self.curve_
            c.write(out_dir / CURVE)
        return out_dir

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> "TorchMethod":
        import torch

        from scjepa.device import resolve_device

        obj = cls.from_dir(model_dir)
        obj.restore_info(read_hparams(model_dir))
        obj.module_ = obj.build_module(obj.n_genes_)
        state = torch.load(Path(model_dir) / MODEL, map_location="cpu", weights_only=True)
        obj.module_.load_state_dict(state)
        obj.module_.to(resolve_device(obj.hparams.device)).eval()
        return obj

    def restore_info(self, meta: dict) -> None:
        """Inverse of ``model_info`` (subclasses with extra fitted state override)."""


def encoder_kwargs(hp: TrainHParams, n_genes: int) -> dict:
    return {"n_genes": n_genes, "hidden": hp.hidden, "latent": hp.latent, "dropout": hp.dropout}


def hparam_defaults(cls: type) -> dict:
    """Field -> default of a hyper-parameter dataclass (JSON-ready; for the config schema)."""
    out = {}
    for f in dataclasses.fields(cls):
        v = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


__all__ = ["TrainHParams", "Method", "TorchMethod", "make_hparams", "read_hparams", "read_genes",
           "hparam_defaults", "encoder_kwargs", "to_matrix"]
