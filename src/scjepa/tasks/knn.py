"""Zero-shot cell-type annotation on a frozen embedding (the ``zero_shot`` task).

Protocol (this repository's docs/PROTOCOL.md §3.1): reference = a configurable split (default ``train``), query =
``test``; the kNN classifier of :mod:`scjepa.knn` (k = 5, Euclidean, majority vote) and a linear probe
(logistic regression fitted on the reference) beside it; macro- and micro-F1 (sklearn). Query labels
absent from the reference are kept: such cells can only be misclassified, and their
number is reported as ``n_query_unseen_labels``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from scjepa.contracts import EMBEDDING_KEY, labels_of, split_mask
from scjepa.errors import InputError
from scjepa.knn import DEFAULT_K, knn_predict, linear_probe_predict, score_annotation


def zero_shot(
    adata,
    *,
    label_key: str = "cell_type",
    split_key: str = "split",
    ref_split: str | None = "train",
    query_split: str | None = "test",
    k: int = DEFAULT_K,
    probe: bool = True,
    seed: int = 0,
    emb_key: str = EMBEDDING_KEY,
    path=None,
    hierarchy=None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Zero-shot annotation of one embedding: kNN (and linear probe) from ``ref_split`` to ``query_split``.

    ``adata``: embedding AnnData (obs + ``obsm[emb_key]``). Returns ``(metrics, predictions)``:
    metrics ``knn_{macro_f1,micro_f1,weighted_f1,accuracy}``, ``probe_*`` likewise (if
    ``probe``), ``n_ref``, ``n_query``, ``n_classes_ref``, ``n_query_unseen_labels``;
    predictions ``{"obs_names", "y_true", "knn", "probe"}`` for the query cells. ``hierarchy``
    (a :class:`scjepa.ontology.Hierarchy`): also ``knn_hier_*`` and ``probe_hier_*``.
    """
    if ref_split is not None and ref_split == query_split:
        raise InputError(f"reference and query are the same split '{ref_split}'", path=path, column=split_key)
    labels = labels_of(adata.obs, label_key, path=path)
    ref = split_mask(adata.obs, ref_split, split_key=split_key, path=path)
    query = split_mask(adata.obs, query_split, split_key=split_key, path=path)
    emb = np.asarray(adata.obsm[emb_key], dtype=np.float32)
    names = np.asarray(adata.obs_names).astype(str)
    pred = knn_predict(emb[ref], labels[ref], emb[query], k=k, ref_ids=names[ref], query_ids=names[query])
    metrics = {f"knn_{m}": v for m, v in score_annotation(labels[query], pred).items()}
    preds: dict[str, Any] = {"obs_names": names[query], "y_true": labels[query], "knn": pred}
    if probe:
        ppred = linear_probe_predict(emb[ref], labels[ref], emb[query], seed=seed)
        metrics.update({f"probe_{m}": v for m, v in score_annotation(labels[query], ppred).items()})
        preds["probe"] = ppred
    if hierarchy is not None:
        ids = hierarchy.label_ids(adata.obs, path=path)
        for readout in ("knn", "probe"):
            if readout in preds:
                metrics.update(hierarchy.scores(labels[query], preds[readout], ids, prefix=f"{readout}_"))
    metrics.update(label_overlap_counts(labels[ref], labels[query]))
    return metrics, preds


def label_overlap_counts(ref_labels: Sequence, query_labels: Sequence) -> dict[str, float]:
    """Sizes and the number of query cells whose label the reference never shows."""
    ref_set = set(np.asarray(ref_labels).astype(str))
    q = np.asarray(query_labels).astype(str)
    unseen = ~np.isin(q, list(ref_set))
    return {
        "n_ref": float(len(ref_labels)),
        "n_query": float(len(q)),
        "n_classes_ref": float(len(ref_set)),
        "n_query_unseen_labels": float(unseen.sum()),
        "n_query_unseen_classes": float(len(set(q[unseen]))),
    }


def zero_shot_config(**kwargs: Any) -> dict[str, Any]:
    """The config block of a zero-shot score record (what produced it)."""
    return {"metric": "euclidean", "vote": "majority, ties to the nearest", **kwargs}
