"""Supervised MLP: the shared encoder + a linear classification head, trained from scratch.

Loss: class-balanced cross-entropy (sklearn's 'balanced' weights n / (K · n_k) from the training
labels; label -1 = unknown, ignored). The embedding is the encoder output (64-d), like every other method.
Class counts come from the loader's ``class_counts`` (or ``y``) when it has them, else from one pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from scjepa.errors import InputError
from scjepa.methods.base import TorchMethod, TrainHParams, encoder_kwargs
from scjepa.models.distributed import global_sum, rank_world
from scjepa.models.mlp import Encoder

log = logging.getLogger(__name__)


@dataclass
class SupervisedHParams(TrainHParams):
    class_balanced: bool = True


def balanced_weights(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    w = np.zeros_like(counts)
    nz = counts > 0
    w[nz] = counts.sum() / (nz.sum() * counts[nz])
    return w.astype(np.float32)


def _sum_over_ranks(counts: np.ndarray) -> np.ndarray:
    """Per-class counts summed over data-parallel ranks (the counts themselves with one process)."""
    if rank_world()[1] == 1:
        return counts
    import torch.distributed as dist

    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    n = torch.tensor([len(counts)], device=dev)
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    t = torch.as_tensor(np.pad(counts, (0, int(n) - len(counts))).astype(np.int64), device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


class SupervisedModule(nn.Module):
    loss_terms = ("loss",)

    def __init__(self, n_genes: int, n_classes: int, hp: SupervisedHParams, class_weights=None):
        super().__init__()
        self.encoder = Encoder(**encoder_kwargs(hp, n_genes))
        self.head = nn.Linear(hp.latent, n_classes)
        w = torch.as_tensor(class_weights if class_weights is not None else np.ones(n_classes), dtype=torch.float32)
        self.register_buffer("class_weights", w)

    def training_step(self, batch: dict, generator=None) -> dict[str, torch.Tensor]:
        y = batch["y"]
        logits = self.head(self.encoder(batch["x"])).float()
        world = rank_world()[1]
        if world > 1:
            # the weighted mean over the global batch: Σ w_y·CE / Σ w_y, the denominator summed over
            # ranks (times W, which DDP's average over ranks divides out); decided alike on every rank
            den = global_sum(self.class_weights[y[y >= 0]].sum())
            if not bool(den > 0):
                return {"loss": logits.sum() * 0.0}
            ce = F.cross_entropy(logits, y, weight=self.class_weights, ignore_index=-1, reduction="sum")
            return {"loss": ce * world / den}
        if not bool((y >= 0).any()):
            return {"loss": logits.sum() * 0.0}
        return {"loss": F.cross_entropy(logits, y, weight=self.class_weights, ignore_index=-1)}


class Supervised(TorchMethod):
    family = "supervised"
    HParams = SupervisedHParams

    def __init__(self, **hparams):
        super().__init__(**hparams)
        self.classes_: list[str] | None = None
        self.class_weights_: np.ndarray | None = None

    def prepare(self, train_loader) -> None:
        counts = getattr(train_loader, "class_counts", None)
        if counts is None and getattr(train_loader, "y", None) is not None:
            y = np.asarray(train_loader.y)
            counts = np.bincount(y[y >= 0])
        if counts is None:
            log.info("counting class labels with one pass over the training loader")
            counts = np.zeros(0, np.int64)
            for b in train_loader:
                y = b["y"].numpy()
                c = np.bincount(y[y >= 0])
                counts = np.pad(counts, (0, max(0, len(c) - len(counts))))
                counts[: len(c)] += c
            counts = _sum_over_ranks(counts)  # each data-parallel rank saw its part of every batch
        classes = getattr(train_loader, "classes", None)
        n = max(len(classes) if classes is not None else 0, len(counts))
        if n < 2:
            raise InputError(f"the supervised baseline needs ≥ 2 classes in the training labels (found {n})")
        counts = np.pad(np.asarray(counts), (0, n - len(counts)))
        self.classes_ = [str(c) for c in classes] if classes is not None else [str(i) for i in range(n)]
        self.class_weights_ = balanced_weights(counts) if self.hparams.class_balanced else np.ones(n, np.float32)

    def build_module(self, n_genes: int) -> SupervisedModule:
        return SupervisedModule(n_genes, len(self.classes_), self.hparams, self.class_weights_)

    def model_info(self) -> dict:
        return {**super().model_info(), "classes": self.classes_}

    def restore_info(self, meta: dict) -> None:
        self.classes_ = list(meta["classes"])

    def predict(self, X) -> np.ndarray:
        """Class labels (from ``classes_``) of the rows of X."""
        from scjepa.methods.base import to_matrix
        import scipy.sparse as sp

        self._check_fitted()
        X = to_matrix(X)
        dev = next(self.module_.parameters()).device
        out = []
        self.module_.eval()
        with torch.no_grad():
            for s in range(0, X.shape[0], self.hparams.infer_batch_size):
                xb = X[s : s + self.hparams.infer_batch_size]
                xb = torch.from_numpy(np.asarray(xb.toarray() if sp.issparse(xb) else xb, np.float32)).to(dev)
                out.append(self.module_.head(self.module_.encoder(xb)).argmax(1).cpu().numpy())
        return np.asarray(self.classes_, dtype=object)[np.concatenate(out)]
