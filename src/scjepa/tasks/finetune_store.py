"""Fine-tuning in bounded memory: train and val batches from the store, test rows streamed from the processed file.

The in-memory path (:func:`scjepa.tasks.finetune.finetune_dataset`) reads the processed X whole: ~355 GB of
CSR for the scTab corpus (22.2M cells x ~2,000 non-zeros). This path holds none of X:

- **train**: shuffled mini-batches of the store's train split (``scjepa.data.store.StoreLoader``, CSR
  batches densified on the training device, as pretraining reads it); the store is the corpus'
  pretraining store, built from the same processed file, so its train split is the file's train rows;
- **val** (every epoch): the store's val split, unshuffled, in chunks of ``eval_batch_size`` cells
  (:class:`StoreSplit`; memory-mapped shards: ~300k against ~34k cells per CPU-second for the processed
  file's rows, at 2,000 of 19,331 genes per cell, 20k cells, warm page cache; the file's rows are read
  where the store has no val split, ``val_from="processed"``: the same cells and the same scores);
- **test** (once per seed): the processed file's test rows, read in row chunks of ``eval_batch_size`` cells
  (h5py, X backed; contiguous runs of the split's rows are read as one slice, see :class:`SplitRows`).
  Not a 'test' split in the store: the rows are read once per seed in file order, which needs no
  shuffling, no second copy of the corpus' test cells on disk and no change to the pretraining store
  (whose splits are train and val, the ones pretraining may see);
- labels are categorical codes (a few bytes per cell); predictions are class codes, scored with
  :func:`scjepa.knn.score_annotation` on order-preserving rank codes, which gives the same numbers as
  scoring the label strings (the same labels, sorted the same way).

The optimiser, schedule, loss (class-balanced cross-entropy, weights from the store's train label counts as
sklearn's 'balanced' computes them), clipping and selection (best val macro-F1 epoch) are the in-memory
path's. What differs is the order of the train batches: the store loader's epoch order (shards shuffled,
rows shuffled within a buffer of ``buffer_shards`` shards; ``StoreLoader.epoch_order``) instead of one
permutation of the train rows, so the two paths give equal numbers only where they see the same batches
(tests/unit/test_finetune_store.py checks that with a loader yielding the in-memory path's batches).

Memory: the loaders' (a few batches, at most ``2 * buffer_shards + 2`` train and 4 val shards memory-mapped), one chunk of
``eval_batch_size`` rows (CSR read + dense on the device), the model, and per val/test cell a few bytes of
row ids, label and prediction codes (int32/int64) -- never X. ``scjepa.eval_costs.finetune_cost``
(``streaming=True``) models it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from scjepa.errors import InputError

log = logging.getLogger(__name__)

#: runs of a split's rows at most this many rows apart are read as one slice (the rows between are dropped)
MAX_GAP = 64


def _categorical(src, name: str, path):
    """An obs column of the processed file as (codes int array, categories list of str), without strings per
    cell (anndata writes string columns as categoricals)."""
    import pandas as pd

    if name not in src.columns:
        raise InputError(f"obs has no column '{name}'", path=path, column=name)
    col = src.obs_column(name)
    cat = col.astype("category") if not isinstance(col.dtype, pd.CategoricalDtype) else col
    codes = cat.cat.codes.to_numpy()
    if (codes < 0).any():
        raise InputError(f"{int((codes < 0).sum())} cells have no value", path=path, column=name)
    return codes, [str(c) for c in cat.cat.categories]


class SplitRows:
    """The rows of one split of a processed h5ad, yielded in chunks of at most ``chunk_size`` cells as
    (CSR float32 X rows, label codes into :attr:`categories`), in file order.

    Rows of the split that lie at most :data:`MAX_GAP` rows apart are read as one slice of X (h5py
    ``X[a:b]``), and a slice never spans more than ``2 * chunk_size`` rows, so a chunk costs one read per run of
    the split (donor splits come in runs) and its memory is bounded by the chunk size, not the dataset.
    Memory for the whole split: its row ids (8 B per cell) and label codes (4 B per cell).
    """

    def __init__(self, path, split: str, *, label_key: str = "cell_type", split_key: str = "split",
                 chunk_size: int = 4096, categories: Sequence[str] | None = None):
        from scjepa.data.store import _BackedX

        self.path, self.split, self.chunk_size = Path(path), split, max(1, int(chunk_size))
        self._src = _BackedX(self.path)
        split_codes, split_names = _categorical(self._src, split_key, self.path)
        match = [j for j, s in enumerate(split_names) if s == split]
        self.rows = np.flatnonzero(np.isin(split_codes, match)).astype(np.int64)
        del split_codes
        codes, cats = _categorical(self._src, label_key, self.path)
        self.categories = list(cats) if categories is None else list(categories)
        if categories is not None:  # re-code into the given vocabulary (extended by labels it lacks)
            pos = {c: i for i, c in enumerate(self.categories)}
            for c in cats:
                if c not in pos:
                    pos[c] = len(self.categories)
                    self.categories.append(c)
            remap = np.array([pos[c] for c in cats], dtype=np.int32)
            self.labels = remap[codes[self.rows]]
        else:
            self.labels = codes[self.rows].astype(np.int32)
        del codes
        self.var_names = [str(v) for v in self._src.var_names()]
        self.n_genes = int(self._src.shape[1])

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, rows: np.ndarray):
        import scipy.sparse as sp

        parts, start = [], 0
        gaps = np.flatnonzero(np.diff(rows) > MAX_GAP) + 1
        bounds = [*gaps.tolist(), len(rows)]
        for end in bounds:
            while start < end:  # a run, cut where its span would pass 2 x chunk_size rows
                stop = start + int(np.searchsorted(rows[start:end], rows[start] + 2 * self.chunk_size))
                stop = max(stop, start + 1)
                a, b = int(rows[start]), int(rows[stop - 1]) + 1
                block = sp.csr_matrix(self._src.X[a:b])
                parts.append(block[rows[start:stop] - a] if b - a != stop - start else block)
                start = stop
        out = parts[0] if len(parts) == 1 else sp.vstack(parts, format="csr")
        return out.astype(np.float32, copy=False)

    def chunks(self) -> Iterator[tuple[Any, np.ndarray]]:
        for lo in range(0, len(self.rows), self.chunk_size):
            hi = min(lo + self.chunk_size, len(self.rows))
            yield self._read(self.rows[lo:hi]), self.labels[lo:hi]

    def label_id_pairs(self, label_key: str, id_key: str):
        """The distinct (label, term id) pairs of the whole file as a small DataFrame (for
        :meth:`scjepa.ontology.Hierarchy.label_ids`), from the two columns' codes."""
        import pandas as pd

        lab, lab_cats = _categorical(self._src, label_key, self.path)
        if id_key not in self._src.columns:
            return pd.DataFrame({label_key: lab_cats})
        ids, id_cats = _categorical(self._src, id_key, self.path)
        pairs = np.unique(lab.astype(np.int64) * len(id_cats) + ids)  # 8 B a cell, not two string columns
        lab_i, id_i = np.divmod(pairs, len(id_cats))
        return pd.DataFrame({label_key: [lab_cats[i] for i in lab_i], id_key: [id_cats[j] for j in id_i]})

    def close(self) -> None:
        self._src.close()


class StoreSplit:
    """A store split (unshuffled, in shard order) with :class:`SplitRows`' interface: chunks of at most
    ``chunk_size`` cells as (``CSRBatch``, label codes into ``categories``). The store's shards are
    memory-mapped raw arrays: several times faster to read than the processed file's rows (the val pass of
    every epoch), in the loader's bounded memory."""

    def __init__(self, store_dir, split: str, *, chunk_size: int = 4096, categories: Sequence[str],
                 buffer_shards: int = 1):
        from scjepa.data.store import StoreLoader

        self.loader = StoreLoader(store_dir, max(1, int(chunk_size)), shuffle=False, split=split, drop_last=False,
                                  buffer_shards=buffer_shards, prefetch=2, workers=1, sparse=True)
        self.categories = list(categories)
        pos = {c: i for i, c in enumerate(self.categories)}
        for c in self.loader.classes:
            if c not in pos:
                pos[c] = len(self.categories)
                self.categories.append(c)
        self._remap = np.array([pos[c] for c in self.loader.classes], dtype=np.int32)
        self.var_names = list(self.loader.gene_ids)

    def __len__(self) -> int:
        return self.loader.n_cells

    def chunks(self):
        for batch in self.loader:
            yield batch["x"], self._remap[batch["y"].numpy()]

    def close(self) -> None:
        pass


def store_label_counts(store_dir, split: str = "train") -> tuple[list[str], np.ndarray]:
    """(classes, cells per class code) of a store split, reading only the shards' label arrays."""
    import json

    store_dir = Path(store_dir)
    meta = json.loads((store_dir / "meta.json").read_text())
    if split not in meta["splits"]:
        raise InputError(f"store has no split '{split}' (has {list(meta['splits'])})", path=store_dir)
    counts = np.zeros(len(meta["classes"]), np.int64)
    for s in meta["splits"][split]["shards"]:
        with np.load(store_dir / s["file"]) as z:  # an npz member is read on access: labels only
            counts += np.bincount(z["labels"], minlength=len(counts))
    return list(meta["classes"]), counts


def rank_codes(vocab: Sequence[str]) -> np.ndarray:
    """Zero-padded strings of each label's rank in sorted order: scoring them gives the numbers scoring the
    labels gives (sklearn sorts labels; the ranks sort the same way), in a few bytes per cell."""
    vocab = np.asarray(list(vocab), dtype=str)
    order = np.argsort(vocab, kind="stable")
    rank = np.empty(len(vocab), np.int64)
    rank[order] = np.arange(len(vocab))
    width = len(str(max(len(vocab) - 1, 0)))
    return np.array([f"{r:0{width}d}" for r in rank])


def _aligner(var_names: Sequence[str], genes: Sequence[str] | None, min_coverage: float, what: str):
    """(apply(csr) -> csr in the model's gene order, coverage); identity where the genes already match."""
    import pandas as pd

    from scjepa.data.genes import GeneSpace

    if genes is None:
        return None, 1.0
    space = GeneSpace(genes)
    if pd.Index(np.asarray(var_names).astype(str)).equals(space.ids):
        return None, 1.0
    al = space.alignment(var_names, path=what, min_coverage=min_coverage)
    return (lambda m: al.apply(m).astype(np.float32)), float(al.coverage)


def _predict_chunks(model, source, head_to_vocab: np.ndarray, align, device) -> tuple[np.ndarray, np.ndarray]:
    """(true codes, predicted codes) of every row of ``source`` (:class:`SplitRows`, :class:`StoreSplit`), both
    in its vocabulary; eval mode."""
    import torch

    from scjepa.data.store import CSRBatch

    model.eval()
    true, pred = np.empty(len(source), np.int32), np.empty(len(source), np.int32)
    pos = 0
    with torch.no_grad():
        for X, y in source.chunks():
            if align is not None:
                X = align(X.to_scipy() if isinstance(X, CSRBatch) else X)
            if not isinstance(X, CSRBatch):
                X = CSRBatch.from_scipy(X)
            xb = X.to(device).to_dense()  # bit for bit scipy's toarray()
            n = len(y)
            true[pos : pos + n] = y
            pred[pos : pos + n] = head_to_vocab[model(xb).argmax(dim=1).cpu().numpy()]
            pos += n
    return true, pred


def finetune_store(
    store_dir,
    processed,
    model_dir=None,
    *,
    init: str = "pretrained",
    seed: int = 0,
    label_key: str = "cell_type",
    split_key: str = "split",
    config=None,
    encoder=None,
    genes: Sequence[str] | None = None,
    hierarchy=None,
    buffer_shards: int = 4,
    train_loader=None,
    val_from: str = "store",
):
    """:func:`scjepa.tasks.finetune.finetune_dataset` in bounded memory: the same arguments, a store (whose
    train split is the processed file's train rows) and the processed file's path instead of an AnnData.

    Returns ``(result, run_config)`` as the in-memory path does; ``result.test_pred`` holds the test rows'
    predicted labels (an object array sharing the label strings). ``train_loader``: any loader with the
    ``StoreLoader`` interface yielding ``{"x": CSRBatch | tensor, "y": store class codes}`` (tests).
    ``val_from``: the val predictions of every epoch read the store's val split (``"store"``, unshuffled; the
    processed file's rows where the store has none) or the processed file's (``"processed"``); both hold the
    same cells, and a cell's prediction does not depend on the others in its chunk (eval mode), so the val
    scores are the same (tested); the store is faster to read.
    """
    import torch

    from scjepa.data.store import CSRBatch, StoreLoader
    from scjepa.device import select_device
    from scjepa.knn import score_annotation
    from scjepa.tasks.finetune import (INITS, FinetuneConfig, FinetuneResult, build_classifier, train_classifier,
                                       load_pretrained_encoder, reinitialise, selection_metrics)

    cfg = config or FinetuneConfig()
    if init not in INITS:
        raise InputError(f"init must be one of {INITS}, got {init!r}", key="init")
    store_dir, processed = Path(store_dir), Path(processed)
    store_classes, counts = store_label_counts(store_dir, "train")
    store_genes = (store_dir / "genes.txt").read_text().split()
    if encoder is None and model_dir is not None:
        from scjepa.methods.base import read_genes

        encoder = load_pretrained_encoder(model_dir)
        genes = read_genes(model_dir) if genes is None else genes
    elif encoder is None:
        if init == "pretrained":
            raise InputError("init='pretrained' needs a model directory", key="model")
        from scjepa.models.mlp import Encoder

        encoder = Encoder(n_genes=len(store_genes))
    if genes is None:
        n_in = getattr(encoder, "n_genes", len(store_genes))
        if n_in != len(store_genes):
            raise InputError(f"the encoder takes {n_in} genes, the store has {len(store_genes)}, and the model has "
                             "no genes.txt to align them", path=store_dir)
    if init == "random":
        reinitialise(encoder, seed)
    align, coverage = _aligner(store_genes, genes, cfg.min_gene_coverage, str(store_dir))
    n_in = len(genes) if genes is not None else len(store_genes)
    device = select_device(cfg.device)

    # classes: the train split's labels, sorted (np.unique of the strings, as the in-memory path)
    present = np.flatnonzero(counts > 0)
    if not len(present):
        raise InputError("split 'train' has no cells; fine-tuning needs train, val and test", path=store_dir)
    classes = np.unique(np.asarray([store_classes[c] for c in present], dtype=str))
    head_of = {c: i for i, c in enumerate(classes)}
    store_to_head = np.full(len(store_classes), -1, np.int64)
    for c in present:
        store_to_head[c] = head_of[store_classes[c]]
    y_counts = np.zeros(len(classes), np.int64)
    y_counts[store_to_head[present]] = counts[present]
    n_train = int(y_counts.sum())

    if val_from not in ("store", "processed"):
        raise InputError(f"val_from must be 'store' or 'processed', got {val_from!r}", key="val_from")
    import json

    if val_from == "store" and "val" not in json.loads((store_dir / "meta.json").read_text())["splits"]:
        val_from = "processed"  # a store without a val split: the processed file's rows
    if val_from == "store":
        val = StoreSplit(store_dir, "val", chunk_size=cfg.eval_batch_size, categories=list(classes))
    else:
        val = SplitRows(processed, "val", label_key=label_key, split_key=split_key, chunk_size=cfg.eval_batch_size,
                        categories=list(classes))
    test = SplitRows(processed, "test", label_key=label_key, split_key=split_key, chunk_size=cfg.eval_batch_size,
                     categories=val.categories)
    try:
        for name, s in (("val", val), ("test", test)):
            if not len(s):
                raise InputError(f"split '{name}' has no cells; fine-tuning needs train, val and test",
                                 path=processed, column=split_key)
        vocab = test.categories  # head classes first (codes 0..K-1), then the file's other labels
        head_to_vocab = np.arange(len(classes), dtype=np.int32)
        ranks = rank_codes(vocab)

        torch.manual_seed(seed)
        model = build_classifier(encoder, n_in, len(classes)).to(device)
        loader = train_loader or StoreLoader(store_dir, cfg.batch_size, shuffle=True, seed=seed, split="train",
                                             drop_last=False, buffer_shards=buffer_shards, prefetch=2, workers=1,
                                             sparse=True, pin_memory=device.startswith("cuda"))
        lut = torch.from_numpy(store_to_head)

        def epoch_batches(epoch: int):
            loader.set_epoch(epoch)
            for batch in loader:
                x, yb = batch["x"], lut[batch["y"]]
                if align is not None:
                    x = CSRBatch.from_scipy(align(x.to_scipy() if isinstance(x, CSRBatch) else x.numpy()))
                x = x.to(device, non_blocking=True)
                yield (x.to_dense() if isinstance(x, CSRBatch) else x), yb.to(device)

        def val_macro_f1(model) -> float:
            t_true, t_pred = _predict_chunks(model, val, head_to_vocab, align, device)
            return score_annotation(ranks[t_true], ranks[t_pred])["macro_f1"]

        best, history, train_seconds = train_classifier(model, epoch_batches, y_counts, val_macro_f1, cfg, device)
        t_true, t_pred = _predict_chunks(model, test, head_to_vocab, align, device)
        metrics = score_annotation(ranks[t_true], ranks[t_pred])
        vocab_arr = np.asarray(vocab, dtype=object)
        test_pred = vocab_arr[t_pred]
        metrics.update({
            **selection_metrics(best, history, train_seconds),
            "n_train": float(n_train),
            "n_val": float(len(val)),
            "n_test": float(len(test)),
            "n_classes_train": float(len(classes)),
            "n_query_unseen_labels": float((t_true >= len(classes)).sum()),  # vocab codes >= K: not a train label
            "gene_coverage": float(coverage),
        })
        if hierarchy is not None:
            ids = hierarchy.label_ids(test.label_id_pairs(label_key, hierarchy.id_key), path=processed)
            metrics.update(hierarchy.scores(vocab_arr[t_true], test_pred, ids))
    finally:
        val.close()
        test.close()
    run_config = {
        **asdict(cfg),
        "device": device,
        "init": init,
        "model_dir": None if model_dir is None else str(model_dir),
        "label_key": label_key,
        "split_key": split_key,
        "head": "linear on the encoder output",
        "loss": "class-balanced cross-entropy" if cfg.class_balanced else "cross-entropy",
        "selection": "best val macro-F1 epoch",
        "data_path": "store",
        "store": {"dir": str(store_dir), "split": "train", "buffer_shards": int(buffer_shards),
                  "val": "store's val split" if isinstance(val, StoreSplit) else "processed file's val rows",
                  "test": "processed file's test rows", "eval_chunk": int(cfg.eval_batch_size)},
    }
    return FinetuneResult(metrics=metrics, history=history, classes=[str(c) for c in classes],
                          model=model.cpu().eval(), test_pred=test_pred), run_config


def streams(dataset: str, corpus: str, mode: str) -> bool:
    """Whether the workflow fine-tunes ``dataset`` through the store (``tasks.finetune.stream``): ``corpus``
    (default) streams the corpus, whose pretraining store exists and whose processed X need not fit in
    memory; ``never`` keeps every dataset in memory."""
    if mode not in ("corpus", "never"):
        raise InputError(f"tasks.finetune.stream must be 'corpus' or 'never', got {mode!r}", key="tasks.finetune.stream")
    return mode == "corpus" and dataset == corpus
