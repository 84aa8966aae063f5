"""The data contracts every method and task shares: embedding files and score records.

Embedding (``results/embeddings/{method}/{dataset}.h5ad``, see docs/CONTRACTS.md): the processed
dataset's obs, in its order, and ``obsm["X_emb"]`` float32 (N, d), finite.

Score record (``results/scores/{task}/{method}/{dataset}[/{seed}].json``)::

    {"task": str, "method": str, "dataset": str, "seed": int | None,
     "status": "ok" | "n/a" | "failed", "metrics": {name: float}, "config": {...}}
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from scjepa.errors import InputError
from scjepa.io import read_h5ad, write_json

EMBEDDING_KEY = "X_emb"
STATUSES = ("ok", "n/a", "failed")


class NotApplicableError(Exception):
    """The method cannot serve this task (e.g. PCA has no torch encoder to fine-tune)."""


# --------------------------------------------------------------------------- embeddings


def read_embedding(
    path: str | os.PathLike,
    expected_obs_names: Sequence[str] | None = None,
    *,
    key: str = EMBEDDING_KEY,
    required_obs: Iterable[str] = (),
):
    """Read a method's embedding h5ad and check it against the method contract.

    Checks: ``obsm[key]`` exists, is 2-D with one row per cell and is finite; where
    ``expected_obs_names`` is given (the processed dataset's obs names), the rows are the same
    cells in the same order; each of ``required_obs`` is an obs column. Every failure raises an
    :class:`InputError` naming the file (and the column or key).

    Returns the AnnData; ``obsm[key]`` is converted to a float32 ndarray (N, d).
    """
    adata = read_h5ad(path)
    if key not in adata.obsm:
        raise InputError(
            f"has no obsm['{key}'] (the method contract); obsm keys: {list(adata.obsm)}", path=path, key=key
        )
    emb = np.asarray(adata.obsm[key])
    if emb.ndim != 2 or emb.shape[0] != adata.n_obs or emb.shape[1] == 0:
        raise InputError(f"obsm['{key}'] has shape {emb.shape}; expected ({adata.n_obs}, d>0)", path=path, key=key)
    if not np.issubdtype(emb.dtype, np.number):
        raise InputError(f"obsm['{key}'] has non-numeric dtype {emb.dtype}", path=path, key=key)
    emb = emb.astype(np.float32, copy=False)
    finite = np.isfinite(emb)
    if not finite.all():
        bad = int((~finite.all(axis=1)).sum())
        raise InputError(f"obsm['{key}'] has NaN/inf in {bad} of {emb.shape[0]} rows", path=path, key=key)
    adata.obsm[key] = emb
    if expected_obs_names is not None:
        expected = np.asarray(expected_obs_names).astype(str)
        if len(expected) != adata.n_obs:
            raise InputError(
                f"has {adata.n_obs} rows but the processed dataset has {len(expected)} cells; "
                "was it computed from a different version of the dataset?",
                path=path,
            )
        if not np.array_equal(expected, np.asarray(adata.obs_names).astype(str)):
            raise InputError("obs names differ from the processed dataset's (order or identity)", path=path)
    for col in required_obs:
        if col not in adata.obs:
            raise InputError(f"obs has no column '{col}'; columns: {list(adata.obs.columns)}", path=path, column=col)
    return adata


def processed_obs_names(path: str | os.PathLike) -> np.ndarray:
    """The obs names of a processed dataset, read without loading X (backed mode)."""
    adata = read_h5ad(path, backed="r")
    try:
        return np.asarray(adata.obs_names).astype(str)
    finally:
        adata.file.close()


def split_mask(obs, split: str | None, *, split_key: str = "split", path=None, allow_empty: bool = False) -> np.ndarray:
    """Boolean mask of the cells in ``split`` (None = every cell); an empty split is an error."""
    if split is None:
        return np.ones(len(obs), dtype=bool)
    if split_key not in obs:
        raise InputError(f"obs has no split column '{split_key}'", path=path, column=split_key)
    mask = np.asarray(obs[split_key].astype(str) == split)
    if not mask.any() and not allow_empty:
        present = sorted(set(obs[split_key].astype(str)))
        raise InputError(f"split '{split}' has no cells (splits present: {present})", path=path, column=split_key)
    return mask


def labels_of(obs, label_key: str, *, path=None) -> np.ndarray:
    """Labels as a str array; missing values (NaN) are an error naming the column."""
    if label_key not in obs:
        raise InputError(f"obs has no label column '{label_key}'", path=path, column=label_key)
    col = obs[label_key]
    if col.isna().any():
        raise InputError(f"{int(col.isna().sum())} cells have no label", path=path, column=label_key)
    return np.asarray(col.astype(str))


# --------------------------------------------------------------------------- score records


def score_record(
    task: str,
    method: str,
    dataset: str,
    metrics: Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    status: str = "ok",
    config: Mapping[str, Any] | None = None,
) -> dict:
    """Build a score record; metrics are checked to be a flat str -> finite float mapping."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    flat: dict[str, float] = {}
    for k, v in (metrics or {}).items():
        if not isinstance(k, str):
            raise TypeError(f"metric names must be str, got {k!r}")
        try:
            fv = float(v)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metric '{k}' is not a number: {v!r}") from exc
        if not math.isfinite(fv):
            raise ValueError(f"metric '{k}' is not finite: {fv}")
        flat[k] = fv
    return {
        "task": str(task),
        "method": str(method),
        "dataset": str(dataset),
        "seed": None if seed is None else int(seed),
        "status": status,
        "metrics": flat,
        "config": dict(config or {}),
    }


def write_score(record: Mapping[str, Any], dest: str | os.PathLike) -> None:
    """Write a score record atomically (sorted keys: same content, same bytes)."""
    write_json(dict(record), dest)


def read_score(path: str | os.PathLike) -> dict:
    """Read and check a score record; a malformed file is an InputError naming it."""
    path = Path(path)
    if not path.exists():
        raise InputError("does not exist (score record)", path=path)
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"is not valid JSON ({exc})", path=path) from exc
    for key in ("task", "method", "dataset", "status", "metrics"):
        if key not in rec:
            raise InputError("is not a score record", path=path, key=key)
    if rec["status"] not in STATUSES:
        raise InputError(f"status {rec['status']!r} is not one of {STATUSES}", path=path, key="status")
    if not isinstance(rec["metrics"], dict):
        raise InputError("metrics must be a flat name -> number mapping", path=path, key="metrics")
    rec.setdefault("seed", None)
    rec.setdefault("config", {})
    rec["_path"] = str(path)
    return rec


def guarded_record(
    task: str,
    method: str,
    dataset: str,
    compute: Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]],
    *,
    seed: int | None = None,
    record_failures: bool = False,
    context: Mapping[str, Any] | None = None,
    log: logging.Logger | None = None,
) -> dict:
    """The score record of one run of ``compute() -> (metrics, config)``, n/a and failures included.

    A NotApplicableError gives status "n/a" with config ``{"reason": message, **context}``. Any
    other error propagates (nothing is written, the job fails) unless ``record_failures``: then
    status "failed" with config ``{"error": "Type: message", **context}``.
    """
    log = log or logging.getLogger(f"scjepa.scripts.{task}")
    try:
        metrics, config = compute()
        return score_record(task, method, dataset, metrics, seed=seed, config=config)
    except NotApplicableError as exc:
        log.info("%s/%s/%s is n/a: %s", task, method, dataset, exc)
        return score_record(task, method, dataset, seed=seed, status="n/a",
                            config={"reason": str(exc), **(context or {})})
    except Exception as exc:
        if not record_failures:
            raise
        log.exception("%s/%s/%s failed; writing a 'failed' record", task, method, dataset)
        return score_record(task, method, dataset, seed=seed, status="failed",
                            config={"error": f"{type(exc).__name__}: {exc}", **(context or {})})
