"""Scoring a hyper-parameter sweep's variants on validation cells only (the ``sweeps`` config section).

A sweep (``scjepa.config.sweep_variants``) expands a grid over one method's hparams into method variants;
each is pretrained and embedded by its family's rules like any method. This module scores one variant's
embedding of one labelled dataset: kNN (:mod:`scjepa.knn`, the zero-shot task's classifier) from a seeded
draw of the **train** split to a seeded draw of the **val** split. The test split is dropped before the
embedding is indexed, so no test cell can reach a score, a choice or a figure; the record says how many
cells were dropped (this repository's docs/PROTOCOL.md §2.5).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scjepa.contracts import EMBEDDING_KEY, labels_of, processed_obs_names, read_embedding, split_mask
from scjepa.errors import InputError
from scjepa.knn import knn_predict, score_annotation

REFERENCE_SPLIT, QUERY_SPLIT, HELD_OUT_SPLIT = "train", "val", "test"


def _draw(mask: np.ndarray, n_max: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.flatnonzero(mask)
    if idx.size > n_max:
        idx = np.sort(rng.choice(idx, size=n_max, replace=False))
    return idx


def validation_score(
    adata,
    *,
    k: int,
    max_reference_cells: int,
    max_query_cells: int,
    seed: int = 0,
    label_key: str = "cell_type",
    split_key: str = "split",
    emb_key: str = EMBEDDING_KEY,
    path=None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """kNN from ``train`` to ``val`` of one embedding; ``test`` cells are removed first.

    Returns ``(metrics, config)``: ``knn_{macro_f1,micro_f1,weighted_f1,accuracy}``, ``n_ref``, ``n_query``,
    ``n_test_dropped``; the config names the splits and draws.
    """
    split = np.asarray(adata.obs[split_key].astype(str)) if split_key in adata.obs else None
    if split is None:
        raise InputError(f"obs has no split column '{split_key}'", path=path, column=split_key)
    held_out = split == HELD_OUT_SPLIT
    adata = adata[~held_out]  # nothing below can see a test cell
    rng = np.random.default_rng(seed)
    ref = _draw(split_mask(adata.obs, REFERENCE_SPLIT, split_key=split_key, path=path), max_reference_cells, rng)
    query = _draw(split_mask(adata.obs, QUERY_SPLIT, split_key=split_key, path=path), max_query_cells, rng)
    labels = labels_of(adata.obs, label_key, path=path)
    emb = np.asarray(adata.obsm[emb_key], dtype=np.float32)
    names = np.asarray(adata.obs_names).astype(str)
    pred = knn_predict(emb[ref], labels[ref], emb[query], k=min(k, ref.size), ref_ids=names[ref],
                       query_ids=names[query])
    metrics = {f"knn_{m}": v for m, v in score_annotation(labels[query], pred).items()}
    metrics.update(n_ref=float(ref.size), n_query=float(query.size), n_test_dropped=float(held_out.sum()))
    config = {"reference_split": REFERENCE_SPLIT, "query_split": QUERY_SPLIT, "k": int(k),
              "max_reference_cells": int(max_reference_cells), "max_query_cells": int(max_query_cells),
              "draw_seed": int(seed), "metric": "euclidean"}
    return metrics, config


def sweep_rule(rule) -> dict:
    """Rule ``score_sweep``: one variant's validation record.

    input: ``emb``, ``processed``; params: ``method``, ``dataset``, ``k``, ``max_reference_cells``,
    ``max_query_cells``, ``seed`` (the draws), ``variant`` (sweep, point, hparams, pretraining seed).
    """
    from scjepa.tasks.common import score_one

    p, emb = rule.params, rule.input["emb"]

    def compute(method, dataset, seed):
        adata = read_embedding(emb, processed_obs_names(rule.input["processed"]), required_obs=("cell_type", "split"))
        metrics, config = validation_score(adata, k=int(p["k"]), max_reference_cells=int(p["max_reference_cells"]),
                                           max_query_cells=int(p["max_query_cells"]), seed=int(seed), path=emb)
        return metrics, {**config, **dict(p["variant"]), "embedding": str(emb)}

    return score_one(rule, "sweep", compute, seed=int(p["seed"]), seed_in_record=False)


__all__ = ["validation_score", "sweep_rule", "REFERENCE_SPLIT", "QUERY_SPLIT"]
