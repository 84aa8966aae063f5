"""Zero-shot cell-type annotation on a frozen embedding: the ONE kNN scorer of the workflow.

Protocol (PROTOCOL.md "Evaluations"): k = 5 nearest neighbours by Euclidean distance, majority
vote, reference = a configurable split (default ``train``), query = ``test``; macro- and micro-F1
(sklearn). A linear probe (logistic regression on the embedding, fitted on the reference) is
reported beside it.

Unlike ssl_in_scg's code, no "self match" is dropped: reference and query are disjoint by
construction, and :func:`knn_predict` refuses overlapping cell ids, so a query can never see
itself. Query labels absent from the reference are kept: such cells can only be misclassified
(as in the paper), and their number is reported as ``n_query_unseen_labels``.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from scjepa.errors import InputError
from scjepa.tasks.common import EMBEDDING_KEY, labels_of, split_mask

DEFAULT_K = 5


def check_disjoint(ref_ids: Sequence[str] | None, query_ids: Sequence[str] | None) -> None:
    """Raise ValueError if any cell id is both in the reference and in the query."""
    if ref_ids is None or query_ids is None:
        return
    overlap = np.intersect1d(np.asarray(ref_ids).astype(str), np.asarray(query_ids).astype(str))
    if overlap.size:
        shown = ", ".join(map(str, overlap[:5]))
        raise ValueError(
            f"{overlap.size} cell id(s) are both in the kNN reference and the query (e.g. {shown}); "
            "a query cell must never be its own neighbour"
        )


def knn_predict(
    ref_emb: np.ndarray,
    ref_labels: Sequence,
    query_emb: np.ndarray,
    k: int = DEFAULT_K,
    *,
    ref_ids: Sequence[str] | None = None,
    query_ids: Sequence[str] | None = None,
) -> np.ndarray:
    """Majority vote of the ``k`` Euclidean nearest reference cells for each query cell.

    Shapes: ``ref_emb`` (R, d), ``ref_labels`` (R,), ``query_emb`` (Q, d) -> labels (Q,).
    Ties in the vote go to the tied class whose nearest member is closest to the query (so k = 1
    behaviour is recovered and the result never depends on label spelling). If ``ref_ids`` and
    ``query_ids`` are given, they must be disjoint (ValueError otherwise). Exact search
    (brute force, chunked by scikit-learn to bounded memory).
    """
    from sklearn.neighbors import NearestNeighbors

    ref_emb = np.asarray(ref_emb, dtype=np.float32)
    query_emb = np.asarray(query_emb, dtype=np.float32)
    ref_labels = np.asarray(ref_labels)
    if ref_emb.ndim != 2 or query_emb.ndim != 2 or ref_emb.shape[1] != query_emb.shape[1]:
        raise ValueError(f"embeddings must be 2-D with equal width, got {ref_emb.shape} and {query_emb.shape}")
    if len(ref_labels) != len(ref_emb):
        raise ValueError(f"{len(ref_labels)} reference labels for {len(ref_emb)} reference cells")
    if len(ref_emb) == 0:
        raise ValueError("the kNN reference is empty")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check_disjoint(ref_ids, query_ids)
    if len(query_emb) == 0:
        return ref_labels[:0]
    k_eff = min(k, len(ref_emb))
    nn = NearestNeighbors(n_neighbors=k_eff, algorithm="brute", metric="euclidean")
    nn.fit(ref_emb)
    _, idx = nn.kneighbors(query_emb)  # (Q, k), sorted by distance
    classes, codes = np.unique(ref_labels, return_inverse=True)
    neigh = codes[idx]  # (Q, k) class codes, nearest first
    n_cls = len(classes)
    counts = np.zeros((len(query_emb), n_cls), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(query_emb)), k_eff), neigh.ravel()), 1)
    # Tie-break: among classes with the top count, the one appearing earliest in distance order.
    first_rank = np.full((len(query_emb), n_cls), k_eff, dtype=np.int64)
    for j in range(k_eff - 1, -1, -1):
        first_rank[np.arange(len(query_emb)), neigh[:, j]] = j
    key = counts * (k_eff + 1) - first_rank
    return classes[np.argmax(key, axis=1)]


def score_annotation(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """Macro-, micro- and weighted-F1 and accuracy (sklearn), as floats.

    Labels are the union of true and predicted labels (sklearn's default, as in
    ``classification_report`` used by the paper): a true class never predicted scores F1 = 0 in
    the macro average. For single-label multi-class data micro-F1 equals accuracy.
    """
    from sklearn.metrics import accuracy_score, f1_score

    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("no cells to score")
    return {
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
    }


def linear_probe_predict(
    ref_emb: np.ndarray,
    ref_labels: Sequence,
    query_emb: np.ndarray,
    *,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 1000,
) -> np.ndarray:
    """Multinomial logistic regression on the (standardised) embedding, fitted on the reference.

    Standardising does not change the model class; it only makes the L2 penalty (``C``) and
    lbfgs' convergence independent of the embedding's scale, which differs between methods.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ref_labels = np.asarray(ref_labels)
    classes = np.unique(ref_labels)
    if len(classes) == 1:  # lbfgs needs two classes; the only sensible prediction is that class
        return np.full(len(query_emb), classes[0], dtype=ref_labels.dtype)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        # max_iter bounds the cost on large references; a not-quite-converged probe is still a probe.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(np.asarray(ref_emb, dtype=np.float32), ref_labels)
    return clf.predict(np.asarray(query_emb, dtype=np.float32))


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
) -> tuple[dict[str, float], dict[str, Any]]:
    """Zero-shot annotation of one embedding: kNN (and linear probe) from ``ref_split`` to ``query_split``.

    ``adata``: embedding AnnData (obs + ``obsm[emb_key]``). Returns ``(metrics, predictions)``:
    metrics ``knn_{macro_f1,micro_f1,weighted_f1,accuracy}``, ``probe_*`` likewise (if
    ``probe``), ``n_ref``, ``n_query``, ``n_classes_ref``, ``n_query_unseen_labels``;
    predictions ``{"obs_names", "y_true", "knn", "probe"}`` for the query cells.
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
