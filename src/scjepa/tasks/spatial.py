"""Spatial transfer (Fig. 3): annotation of a spatial dataset whose gene panel is a small part of
the corpus gene space (the processed dataset zero-fills the rest).

Two readouts, both through the one kNN scorer (:mod:`scjepa.knn`):

- **within**: zero-shot kNN (and linear probe) inside the spatial dataset, ``ref_split`` ->
  ``query_split`` (train -> test by default). Fine-tuned annotation of the spatial dataset is the
  ordinary fine-tune task (:mod:`scjepa.tasks.finetune`) run on it.
- **cross-platform transfer** (beyond the paper): reference = a dissociated-cell dataset's
  embedding by the same method, query = every spatial cell; macro-/micro-F1 over the cells whose
  label both datasets share (the reference is restricted to those labels too, so a prediction can
  only be a label the query could have).

Cell ids are qualified by dataset name (``dataset:obs_name``) before the disjointness check, so
barcodes that happen to repeat across two datasets are not mistaken for the same cell, while a
dataset used as its own reference still cannot let a cell see itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from scjepa.contracts import EMBEDDING_KEY, labels_of, split_mask
from scjepa.errors import InputError
from scjepa.knn import DEFAULT_K, knn_predict, score_annotation
from scjepa.tasks.knn import zero_shot

PREDICTION_COLUMNS = ("obs_name", "x", "y", "cell_type", "split", "pred_knn", "pred_transfer")


def cross_platform_transfer(
    ref_adata,
    query_adata,
    *,
    ref_name: str,
    query_name: str,
    label_key: str = "cell_type",
    ref_label_key: str | None = None,
    ref_split: str | None = None,
    split_key: str = "split",
    k: int = DEFAULT_K,
    emb_key: str = EMBEDDING_KEY,
    ref_path=None,
    query_path=None,
) -> tuple[dict[str, float], np.ndarray]:
    """kNN transfer of labels from a dissociated reference embedding to every query (spatial) cell.

    Returns ``(metrics, predictions)``: metrics ``transfer_{macro_f1,micro_f1,weighted_f1,accuracy}``
    over the query cells with a shared label, ``transfer_n_shared_labels``, ``transfer_n_ref``
    (reference cells with a shared label), ``transfer_n_query`` (scored query cells),
    ``transfer_n_query_unshared`` (query cells left out); predictions (n_query_total,) for every
    query cell (cells with an unshared label get a prediction too, for the figure).
    """
    ref_label_key = ref_label_key or label_key
    ref_emb = np.asarray(ref_adata.obsm[emb_key], dtype=np.float32)
    q_emb = np.asarray(query_adata.obsm[emb_key], dtype=np.float32)
    if ref_emb.shape[1] != q_emb.shape[1]:
        raise InputError(
            f"embedding width {ref_emb.shape[1]} differs from the query's ({q_emb.shape[1]}, {query_path}); "
            "reference and query must come from the same method",
            path=ref_path,
        )
    ref_labels = labels_of(ref_adata.obs, ref_label_key, path=ref_path)
    q_labels = labels_of(query_adata.obs, label_key, path=query_path)
    ref_mask = split_mask(ref_adata.obs, ref_split, split_key=split_key, path=ref_path)
    shared = np.intersect1d(np.unique(ref_labels[ref_mask]), np.unique(q_labels))
    if shared.size == 0:
        raise InputError(
            f"shares no '{label_key}' label with the reference '{ref_name}' ({ref_path}); "
            "cross-platform transfer needs a common label vocabulary",
            path=query_path,
            column=label_key,
        )
    ref_use = ref_mask & np.isin(ref_labels, shared)
    q_scored = np.isin(q_labels, shared)
    ref_ids = np.char.add(f"{ref_name}:", np.asarray(ref_adata.obs_names).astype(str)[ref_use])
    q_ids = np.char.add(f"{query_name}:", np.asarray(query_adata.obs_names).astype(str))
    pred = knn_predict(ref_emb[ref_use], ref_labels[ref_use], q_emb, k=k, ref_ids=ref_ids, query_ids=q_ids)
    scores = score_annotation(q_labels[q_scored], pred[q_scored])
    metrics = {f"transfer_{m}": v for m, v in scores.items()}
    metrics.update(
        {
            "transfer_n_shared_labels": float(shared.size),
            "transfer_n_ref": float(ref_use.sum()),
            "transfer_n_query": float(q_scored.sum()),
            "transfer_n_query_unshared": float((~q_scored).sum()),
        }
    )
    return metrics, pred


def spatial_scores(
    spatial,
    reference=None,
    *,
    spatial_name: str,
    reference_name: str | None = None,
    label_key: str = "cell_type",
    split_key: str = "split",
    ref_split: str | None = "train",
    query_split: str | None = "test",
    transfer_ref_split: str | None = None,
    k: int = DEFAULT_K,
    probe: bool = True,
    seed: int = 0,
    emb_key: str = EMBEDDING_KEY,
    spatial_path=None,
    reference_path=None,
    hierarchy=None,
) -> tuple[dict[str, float], pd.DataFrame, dict[str, Any]]:
    """Within-dataset zero-shot kNN and (if ``reference`` is given) cross-platform transfer.

    ``spatial``, ``reference``: embedding AnnData of one method (obs + ``obsm[emb_key]``); the
    spatial obs may carry ``x``/``y`` coordinates. Returns ``(metrics, predictions, config)``:
    metrics ``knn_*``, ``probe_*``, counts (as :func:`scjepa.tasks.knn.zero_shot`) and
    ``transfer_*``; predictions a DataFrame with :data:`PREDICTION_COLUMNS` (one row per spatial
    cell; ``pred_knn`` is empty outside the query split, ``pred_transfer`` empty without a
    reference). ``hierarchy`` (a :class:`scjepa.ontology.Hierarchy`): also the ``hier_*`` scores of
    each readout (transfer: over the same shared-label cells).
    """
    metrics, within = zero_shot(
        spatial,
        label_key=label_key,
        split_key=split_key,
        ref_split=ref_split,
        query_split=query_split,
        k=k,
        probe=probe,
        seed=seed,
        emb_key=emb_key,
        path=spatial_path,
        hierarchy=hierarchy,
    )
    names = np.asarray(spatial.obs_names).astype(str)
    pred_knn = pd.Series("", index=names, dtype=object)
    pred_knn[np.asarray(within["obs_names"])] = within["knn"]
    pred_transfer = np.full(len(names), "", dtype=object)
    if reference is not None:
        tmetrics, tpred = cross_platform_transfer(
            reference,
            spatial,
            ref_name=reference_name or "reference",
            query_name=spatial_name,
            label_key=label_key,
            ref_split=transfer_ref_split,
            split_key=split_key,
            k=k,
            emb_key=emb_key,
            ref_path=reference_path,
            query_path=spatial_path,
        )
        metrics.update(tmetrics)
        pred_transfer = tpred.astype(object)
        if hierarchy is not None:
            q_labels = labels_of(spatial.obs, label_key, path=spatial_path)
            shared = np.isin(q_labels, list(set(labels_of(reference.obs, label_key, path=reference_path))))
            if shared.any():
                ids = hierarchy.label_ids(spatial.obs, reference.obs, path=spatial_path)
                metrics.update(hierarchy.scores(q_labels[shared], tpred[shared].astype(str), ids, prefix="transfer_"))
    obs = spatial.obs

    def coord(col):
        return np.asarray(obs[col], dtype=float) if col in obs else np.full(len(names), np.nan)

    predictions = pd.DataFrame(
        {
            "obs_name": names,
            "x": coord("x"),
            "y": coord("y"),
            "cell_type": labels_of(obs, label_key, path=spatial_path),
            "split": np.asarray(obs[split_key].astype(str)) if split_key in obs else "",
            "pred_knn": pred_knn.to_numpy(),
            "pred_transfer": pred_transfer,
        },
        columns=list(PREDICTION_COLUMNS),
    )
    config = {
        "k": k,
        "label_key": label_key,
        "split_key": split_key,
        "ref_split": ref_split,
        "query_split": query_split,
        "probe": probe,
        "reference": reference_name,
        "transfer_ref_split": transfer_ref_split,
        "transfer_scored_on": "query cells whose label the reference also has",
    }
    return metrics, predictions, config


def write_predictions(predictions: pd.DataFrame, dest) -> None:
    """Per-cell predictions as CSV (atomic; fixed float format, so the bytes are reproducible)."""
    from scjepa.io import write_text

    write_text(predictions.to_csv(index=False, float_format="%.6g"), dest)


def read_predictions(path) -> pd.DataFrame:
    """Read a predictions CSV written by :func:`write_predictions` (labels stay strings)."""
    from pathlib import Path

    if not Path(path).exists():
        raise InputError("does not exist (spatial predictions)", path=path)
    df = pd.read_csv(
        path,
        dtype={c: str for c in ("obs_name", "cell_type", "split", "pred_knn", "pred_transfer")},
        keep_default_na=False,
    )
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"lacks columns {missing}", path=path)
    df["x"] = pd.to_numeric(df["x"], errors="coerce")
    df["y"] = pd.to_numeric(df["y"], errors="coerce")
    return df
