"""Fine-tuned cell-type annotation: pretrained encoder + linear head, every layer trained.

Protocol (this repository's docs/PROTOCOL.md §3.2; where each value comes from: its §5): class-balanced
cross-entropy (sklearn 'balanced' weights on the train split), AdamW lr 9e-4, weight decay 0.05,
StepLR(2, 0.9) and gradient clipping at 1.0; model selection on the
val split (the epoch with the best val macro-F1); the selected model is scored on the test split
with :func:`scjepa.knn.score_annotation`. One call = one seed; the tables aggregate seeds.

The supervised baseline is the same code path with ``init="random"``: the same architecture,
freshly initialised (seeded), trained from scratch.

The head reads the encoder output z (the 64-d embedding that the kNN task scores), so
fine-tuning and zero-shot evaluate the same representation.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from scjepa.contracts import NotApplicableError, labels_of
from scjepa.device import select_device
from scjepa.errors import InputError
from scjepa.knn import score_annotation
from scjepa.tasks.knn import label_overlap_counts

log = logging.getLogger(__name__)

INITS = ("pretrained", "random")


@dataclass
class FinetuneConfig:
    """Hyper-parameters of one fine-tuning run (defaults and their sources: this repository's docs/PROTOCOL.md §3.2, §5)."""

    max_epochs: int = 20  # tasks.finetune.max_epochs
    batch_size: int = 256
    lr: float = 9e-4
    weight_decay: float = 0.05
    lr_step_size: int = 2  # StepLR, epochs
    lr_gamma: float = 0.9
    grad_clip: float | None = 1.0
    class_balanced: bool = True
    patience: int | None = None  # stop after this many epochs without a better val macro-F1
    eval_batch_size: int = 4096
    device: str = "auto"
    min_gene_coverage: float = 0.5

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "FinetuneConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown fine-tuning option(s) {sorted(unknown)}", key="finetune")
        return cls(**d)


@dataclass
class FinetuneResult:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    model: Any = None  # the selected classifier (encoder + head), on CPU, eval mode
    test_pred: np.ndarray | None = None


class BestEpoch:
    """Model selection shared by both fine-tuning paths: keep the weights of the best val macro-F1 epoch (a
    strict improvement), stop after ``patience`` epochs without one, restore the best at the end."""

    def __init__(self, patience: int | None):
        self.patience, self.f1, self.epoch, self.state, self.since = patience, -math.inf, 0, None, 0

    def update(self, epoch: int, val_f1: float, model) -> bool:
        """Record an epoch; True when training should stop."""
        if val_f1 > self.f1:
            self.f1, self.epoch, self.since = val_f1, epoch, 0
            self.state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            return False
        self.since += 1
        return self.patience is not None and self.since >= self.patience

    def restore(self, model) -> None:
        if self.state is None:
            raise ValueError("fine-tuning ran no epoch (max_epochs must be >= 1)")
        model.load_state_dict(self.state)


def _torch():
    import torch

    return torch


def build_classifier(encoder, n_genes: int, n_classes: int):
    """encoder (N, n_genes) -> z (N, d); returns nn.Sequential(encoder, Linear(d, n_classes))."""
    torch = _torch()
    encoder.eval()
    with torch.no_grad():
        d = int(encoder(torch.zeros(2, n_genes)).shape[1])
    return torch.nn.Sequential(encoder, torch.nn.Linear(d, n_classes))


def reinitialise(module, seed: int) -> None:
    """Fresh (seeded) default initialisation of every layer that has one: the 'random' init."""
    torch = _torch()
    torch.manual_seed(seed)
    for m in module.modules():
        if hasattr(m, "reset_parameters") and m is not module:
            m.reset_parameters()


def load_pretrained_encoder(model_dir: str | os.PathLike):
    """``scjepa.methods.load_encoder`` with 'no torch encoder' turned into NotApplicableError."""
    from scjepa.methods import load_encoder  # the methods package owns model directories

    try:
        return load_encoder(model_dir)
    except InputError:
        raise
    except ValueError as exc:  # documented: methods without a torch encoder
        raise NotApplicableError(str(exc)) from exc


def train_classifier(model, epoch_batches, class_counts: np.ndarray, val_macro_f1, cfg: FinetuneConfig,
                     device: str) -> tuple[BestEpoch, list[dict[str, float]], float]:
    """The fine-tuning loop both data paths share (in memory: :func:`finetune`; streamed from the store:
    ``scjepa.tasks.finetune_store``): AdamW + StepLR, cross-entropy (class-balanced as sklearn's
    ``compute_class_weight("balanced")``: n / (K * count) from ``class_counts``), one pass of
    ``epoch_batches(epoch)`` (``(x, y)`` tensors on ``device``; a single-row batch is skipped when the train split
    has more rows: it adds noise, nothing else) per epoch, ``val_macro_f1(model)`` after each, and
    :class:`BestEpoch` selection (patience, restore). Returns ``(best, history, train_seconds)``."""
    n_train = int(np.sum(class_counts))
    torch = _torch()
    weight = None
    if cfg.class_balanced:
        w = class_counts.sum() / (len(class_counts) * np.asarray(class_counts, dtype=np.float64))
        weight = torch.tensor(w, dtype=torch.float32, device=device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg.lr_step_size), gamma=cfg.lr_gamma)
    best = BestEpoch(cfg.patience)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        total, n_seen = 0.0, 0
        for xb, yb in epoch_batches(epoch):
            if len(yb) < 2 and n_train > 1:
                continue
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += float(loss.detach()) * len(yb)
            n_seen += len(yb)
        sched.step()
        val_f1 = val_macro_f1(model)
        history.append({"epoch": epoch, "train_loss": total / max(n_seen, 1), "val_macro_f1": val_f1})
        log.info("epoch %d: train loss %.4f, val macro-F1 %.4f", epoch, history[-1]["train_loss"], val_f1)
        if best.update(epoch, val_f1, model):
            break
    train_seconds = time.perf_counter() - t0
    best.restore(model)
    return best, history, train_seconds


def selection_metrics(best: BestEpoch, history: list, train_seconds: float) -> dict[str, float]:
    """The record's model-selection figures: val macro-F1 and 1-based epoch of the selected model, epochs run,
    training seconds."""
    return {"val_macro_f1": float(best.f1), "best_epoch": float(best.epoch), "epochs_run": float(len(history)),
            "train_seconds": float(train_seconds)}


def _dense_rows(X, idx: np.ndarray) -> np.ndarray:
    rows = X[idx]
    rows = rows.toarray() if hasattr(rows, "toarray") else np.asarray(rows)
    return rows.astype(np.float32, copy=False)


def predict_codes(model, X, *, batch_size: int = 4096, device: str = "cpu", rows: np.ndarray | None = None
                  ) -> np.ndarray:
    """Class codes (argmax of the logits) for every row of X (dense or CSR), or for ``rows`` of it in
    that order, in eval mode."""
    torch = _torch()
    model.eval()
    out = []
    ids = np.arange(X.shape[0]) if rows is None else np.asarray(rows)
    with torch.no_grad():
        for start in range(0, len(ids), batch_size):
            idx = ids[start : start + batch_size]
            xb = torch.from_numpy(_dense_rows(X, idx)).to(device)
            out.append(model(xb).argmax(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def finetune(
    encoder,
    X,
    labels: Sequence[str],
    splits: Sequence[str],
    *,
    seed: int = 0,
    config: FinetuneConfig | None = None,
    train_split: str = "train",
    val_split: str = "val",
    test_split: str = "test",
) -> FinetuneResult:
    """Fine-tune ``encoder`` + a linear head on X's train rows, select on val, score on test.

    ``X``: (N, n_genes) float32 ndarray or CSR, already in the encoder's gene order;
    ``labels``, ``splits``: (N,) str. The encoder is modified in place (pass a copy to keep it).
    Metrics: test ``macro_f1, micro_f1, weighted_f1, accuracy``; ``val_macro_f1`` of the
    selected epoch, ``best_epoch`` (1-based), ``epochs_run``, ``n_train/n_val/n_test``,
    ``n_query_unseen_labels`` (test cells whose label the train split lacks: always errors),
    ``train_seconds``.
    """
    torch = _torch()
    cfg = config or FinetuneConfig()
    device = select_device(cfg.device)
    labels = np.asarray(labels).astype(str)
    splits = np.asarray(splits).astype(str)
    tr, va, te = (splits == s for s in (train_split, val_split, test_split))
    for name, m in ((train_split, tr), (val_split, va), (test_split, te)):
        if not m.any():
            raise InputError(f"split '{name}' has no cells; fine-tuning needs train, val and test", column="split")
    classes = np.unique(labels[tr])
    code = {c: i for i, c in enumerate(classes)}
    y_tr = np.array([code[c] for c in labels[tr]], dtype=np.int64)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_classifier(encoder, X.shape[1], len(classes)).to(device)

    # row indices into X, not copies of the train/val rows: the job's memory is X once (the batches are
    # the same rows in the same order as from a copy)
    tr_rows, va_rows = np.flatnonzero(tr), np.flatnonzero(va)

    def epoch_batches(epoch: int):
        order = rng.permutation(len(y_tr))
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            yield (torch.from_numpy(_dense_rows(X, tr_rows[idx])).to(device), torch.from_numpy(y_tr[idx]).to(device))

    def val_macro_f1(model) -> float:
        val_pred = classes[predict_codes(model, X, batch_size=cfg.eval_batch_size, device=device, rows=va_rows)]
        return score_annotation(labels[va], val_pred)["macro_f1"]

    best, history, train_seconds = train_classifier(model, epoch_batches, np.bincount(y_tr, minlength=len(classes)),
                                                    val_macro_f1, cfg, device)
    test_pred = classes[predict_codes(model, X, batch_size=cfg.eval_batch_size, device=device, rows=np.flatnonzero(te))]
    metrics = score_annotation(labels[te], test_pred)
    counts = label_overlap_counts(labels[tr], labels[te])
    metrics.update(
        {
            **selection_metrics(best, history, train_seconds),
            "n_train": float(tr.sum()),
            "n_val": float(va.sum()),
            "n_test": float(te.sum()),
            "n_classes_train": counts["n_classes_ref"],
            "n_query_unseen_labels": counts["n_query_unseen_labels"],
        }
    )
    return FinetuneResult(
        metrics=metrics,
        history=history,
        classes=[str(c) for c in classes],
        model=model.cpu().eval(),
        test_pred=test_pred,
    )


def finetune_dataset(
    adata,
    model_dir: str | os.PathLike | None = None,
    *,
    init: str = "pretrained",
    seed: int = 0,
    label_key: str = "cell_type",
    split_key: str = "split",
    config: FinetuneConfig | None = None,
    encoder=None,
    genes: Sequence[str] | None = None,
    path=None,
    hierarchy=None,
) -> tuple[FinetuneResult, dict[str, Any]]:
    """Fine-tune a method's encoder on a processed dataset (AnnData; X = log1p-normalised).

    ``init="pretrained"``: the encoder from ``model_dir`` (``scjepa.methods.load_encoder``);
    raises :class:`NotApplicableError` if the method has no torch encoder.
    ``init="random"``: the same architecture with fresh seeded weights (the supervised
    baseline); without ``model_dir`` the default MLP encoder on the dataset's genes.
    ``encoder``/``genes`` may be given directly instead of ``model_dir`` (tests, notebooks).
    The dataset is aligned to the model's genes (zero-fill; coverage below
    ``config.min_gene_coverage`` is an InputError naming ``path``).
    Returns ``(result, run_config)`` where run_config is the record's config block. ``hierarchy``
    (a :class:`scjepa.ontology.Hierarchy`): also the test split's ``hier_*`` scores.
    """
    cfg = config or FinetuneConfig()
    if init not in INITS:
        raise InputError(f"init must be one of {INITS}, got {init!r}", key="init")
    if encoder is None and model_dir is not None:
        from scjepa.methods.base import read_genes

        encoder = load_pretrained_encoder(model_dir)
        genes = read_genes(model_dir) if genes is None else genes
    elif encoder is None:
        if init == "pretrained":
            raise InputError("init='pretrained' needs a model directory", key="model")
        from scjepa.models.mlp import Encoder

        encoder = Encoder(n_genes=adata.n_vars)
    if genes is None:  # a model without genes.txt: its input must already be the dataset's genes
        n_in = getattr(encoder, "n_genes", adata.n_vars)
        if n_in != adata.n_vars:
            raise InputError(
                f"the encoder takes {n_in} genes, the dataset has {adata.n_vars}, and the model has no "
                "genes.txt to align them",
                path=path,
            )
        genes = list(map(str, adata.var_names))
    if init == "random":
        reinitialise(encoder, seed)
    from scjepa.methods import align_genes  # the one gene aligner (also used by embedding)

    X, coverage = align_genes(
        adata.X, adata.var_names, genes, min_overlap=cfg.min_gene_coverage, what=str(path or "dataset")
    )
    labels = labels_of(adata.obs, label_key, path=path)
    if split_key not in adata.obs:
        raise InputError(f"obs has no split column '{split_key}'", path=path, column=split_key)
    splits = np.asarray(adata.obs[split_key].astype(str))
    result = finetune(encoder, X, labels, splits, seed=seed, config=cfg)
    result.metrics["gene_coverage"] = float(coverage)
    if hierarchy is not None:
        ids = hierarchy.label_ids(adata.obs, path=path)
        result.metrics.update(hierarchy.scores(labels[splits == "test"], result.test_pred, ids))
    run_config = {
        **asdict(cfg),
        "device": select_device(cfg.device),
        "init": init,
        "model_dir": None if model_dir is None else str(model_dir),
        "label_key": label_key,
        "split_key": split_key,
        "head": "linear on the encoder output",
        "loss": "class-balanced cross-entropy" if cfg.class_balanced else "cross-entropy",
        "selection": "best val macro-F1 epoch",
        "data_path": "in_memory",  # the processed X read whole; "store": scjepa.tasks.finetune_store
    }
    return result, run_config
