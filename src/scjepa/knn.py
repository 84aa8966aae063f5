"""The one kNN classifier of the project, its annotation scores and the linear probe beside it.

k = 5 nearest neighbours by Euclidean distance, majority vote (docs/PROTOCOL.md §3.1). Reference
and query must be disjoint: :func:`knn_predict` refuses overlapping cell ids, so a query cell can
never be its own neighbour (unlike ssl_in_scg's code, no "self match" needs dropping). Used by every
task and by the training engine's val curve.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

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
