"""Splits without leakage: evaluation splits taken from the corpus' split, and the check that proves it.

**Why.** The paper's in-distribution sets (HLCA, PBMC, Tabula Sapiens) are datasets *inside* the scTab
corpus. A donor split of such a dataset drawn on its own (``scjepa.data.splits.donor_split``) ignores the
corpus' split, so some of its test donors are corpus train/val donors: their cells were seen in
pretraining, and their labels by the supervised baseline. scTab avoids this by scoring on the store's own
test split; we do the same.

**split_from.** A dataset with ``split_from: {dataset: <corpus>, by: [dataset_id, donor_id]}`` takes each
cell's split from the corpus' processed obs: a donor, identified by the values of the ``by`` columns
(CELLxGENE's ``dataset_id`` and ``donor_id``, which both the corpus and the source h5ad carry), gets the
split the corpus gave it. Donors the corpus lacks (cells scTab filtered out) are ``unmatched``:
``exclude`` (split ``excluded``: scored nowhere; the paper's sets are subsets of the store), ``test`` (never
pretrained on, so safe to score) or ``error``.

**The check** (:func:`check_leakage`, rule ``check_leakage``): no donor of any evaluation dataset's test
split may be a train/val donor of the corpus. It reads obs only, fails with an InputError naming the
dataset, the number of leaking test cells and donors and an example, and writes a JSON report that the
score rules take as input, so no score exists for a run that leaks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from scjepa.errors import InputError

log = logging.getLogger(__name__)

#: the split of cells whose donor the split's source lacks (``unmatched: exclude``): in no split
EXCLUDED = "excluded"
SPLIT_CATEGORIES = ("train", "val", "test", EXCLUDED)
UNMATCHED = ("exclude", "test", "error")
#: corpus splits a method learns from (pretraining; the supervised baseline's labels)
TRAINING_SPLITS = ("train", "val")
_SEP = "\x1f"  # joins the on-columns of one donor key (a character no id contains)


def read_obs_columns(path: str | Path, columns: Sequence[str], *, key: str | None = None) -> pd.DataFrame:
    """The named obs columns of an h5ad (and its obs_names), read without X (bounded by obs size).

    A missing column is an InputError naming the file, the column and ``key`` (the config key that
    should have kept it)."""
    import anndata as ad
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError("does not exist", path=path)
    out = {}
    with h5py.File(path, "r") as f:
        obs = f["obs"]
        index_name = obs.attrs.get("_index", "_index")
        names = ad.io.read_elem(obs[index_name]) if index_name in obs else None
        for col in columns:
            if col not in obs:
                have = [k for k in obs.keys() if k != index_name and k != "__categories"]
                raise InputError(f"obs has no column '{col}' (has: {', '.join(sorted(have)[:20])})",
                                 path=path, column=col, key=key)
            out[col] = np.asarray(ad.io.read_elem(obs[col])).astype(str)
    return pd.DataFrame(out, index=None if names is None else pd.Index(np.asarray(names).astype(str)))


def donor_keys(obs: pd.DataFrame, on: Sequence[str], *, path=None, key: str | None = None) -> np.ndarray:
    """One string per cell identifying its donor across datasets: the ``on`` columns joined."""
    on = list(on)
    for col in on:
        if col not in obs:
            raise InputError(f"obs has no column '{col}', which identifies donors across datasets",
                             path=path, column=col, key=key)
    parts = [np.asarray(obs[c]).astype(str) for c in on]
    out = parts[0].astype(object)
    for p in parts[1:]:
        out = out + _SEP + p.astype(object)
    return out.astype(str)


def split_table(source_obs: pd.DataFrame, on: Sequence[str], *, split_key: str = "split", path=None) -> pd.Series:
    """Donor key -> split, from a processed dataset's obs (the corpus). A donor found in two splits is
    an error (the source's split would not be a donor split)."""
    if split_key not in source_obs:
        raise InputError(f"obs has no '{split_key}' column to take a split from", path=path, column=split_key)
    keys = donor_keys(source_obs, on, path=path)
    df = pd.DataFrame({"key": keys, "split": np.asarray(source_obs[split_key]).astype(str)}).drop_duplicates()
    clash = df[df["key"].duplicated(keep=False)]
    if len(clash):
        k = clash["key"].iloc[0]
        raise InputError(f"donor {_show(k)} is in several splits ({sorted(clash.loc[clash['key'] == k, 'split'])}); "
                         f"the columns {list(on)} do not identify donors", path=path, column=split_key)
    return pd.Series(df["split"].to_numpy(), index=df["key"].to_numpy())


def splits_from(obs: pd.DataFrame, table: pd.Series, on: Sequence[str], *, unmatched: str = "exclude",
                path=None, source: str = "the corpus", key: str | None = None) -> np.ndarray:
    """Each cell's split: its donor's split in ``table`` (:func:`split_table`); see the module docstring
    for ``unmatched``. Returns (N,) str over :data:`SPLIT_CATEGORIES`."""
    if unmatched not in UNMATCHED:
        raise InputError(f"must be one of {UNMATCHED}, got {unmatched!r}", key=key and f"{key}.unmatched")
    keys = donor_keys(obs, on, path=path, key=key and f"{key}.by")
    out = pd.Series(keys).map(table).to_numpy(dtype=object)
    miss = pd.isna(out)
    if miss.any():
        n_donors = len(set(keys[miss]))
        if unmatched == "error":
            raise InputError(f"{int(miss.sum())} cells of {n_donors} donor(s) (e.g. {_show(keys[miss][0])}) are not "
                             f"in {source}, whose split this dataset takes", path=path, key=key)
        out[miss] = EXCLUDED if unmatched == "exclude" else "test"
        log.info("%s: %d cells of %d donor(s) absent from %s -> split '%s'", path, int(miss.sum()), n_donors, source,
                 out[miss][0])
    counts = {s: int((out == s).sum()) for s in SPLIT_CATEGORIES}
    if counts["test"] == 0:
        raise InputError(f"no cell falls in {source}'s test split (splits: {counts}); is it the right corpus, and do "
                         f"the columns {list(on)} hold the same ids in both?", path=path, key=key)
    return out.astype(str)


def check_leakage(corpus_obs: pd.DataFrame, evaluation: Mapping[str, pd.DataFrame], on: Sequence[str], *,
                  corpus: str = "corpus", split_key: str = "split", paths: Mapping[str, str] | None = None) -> dict:
    """No test donor of an evaluation dataset may be a train/val donor of the corpus.

    ``evaluation``: dataset name -> processed obs (with ``split`` and the ``on`` columns). Returns the
    report ``{"by", "corpus", "datasets": {name: {"n_test_cells", "n_test_donors", "n_test_donors_in_corpus",
    "leaking_cells": 0, "leaking_donors": 0}}}``; raises an InputError naming every leaking dataset with its
    counts and an example donor.
    """
    paths = dict(paths or {})
    ckey = donor_keys(corpus_obs, on, path=paths.get(corpus), key="leakage.by")
    if split_key not in corpus_obs:
        raise InputError(f"obs has no '{split_key}' column", path=paths.get(corpus), column=split_key)
    csplit = np.asarray(corpus_obs[split_key]).astype(str)
    seen = set(ckey[np.isin(csplit, TRAINING_SPLITS)])
    all_corpus = set(ckey)
    report: dict = {"by": list(on), "corpus": corpus, "training_splits": list(TRAINING_SPLITS), "datasets": {}}
    leaks = []
    for name, obs in sorted(evaluation.items()):
        path = paths.get(name)
        if split_key not in obs:
            raise InputError(f"obs has no '{split_key}' column; an annotation dataset needs one", path=path,
                             key=f"datasets.{name}")
        keys = donor_keys(obs, on, path=path, key=f"datasets.{name}.keep_columns (leakage.by)")
        test = np.asarray(obs[split_key]).astype(str) == "test"
        bad = test & np.isin(keys, list(seen))
        entry = {"n_test_cells": int(test.sum()), "n_test_donors": len(set(keys[test])),
                 "n_test_donors_in_corpus": len(set(keys[test]) & all_corpus),
                 "leaking_cells": int(bad.sum()), "leaking_donors": len(set(keys[bad]))}
        report["datasets"][name] = entry
        if bad.any():
            leaks.append(f"dataset '{name}': {entry['leaking_cells']} test cells of {entry['leaking_donors']} donor(s) "
                         f"(e.g. {_show(keys[bad][0])}) are in the train/val split of the corpus '{corpus}'")
    if leaks:
        raise InputError("evaluation data leak into pretraining: " + "; ".join(leaks) + ". Take their split from the "
                         f"corpus (datasets.<name>.split_from: {{dataset: {corpus}}})", key="leakage")
    return report


def _show(key: str) -> str:
    return "(" + ", ".join(str(key).split(_SEP)) + ")"


__all__ = ["EXCLUDED", "SPLIT_CATEGORIES", "UNMATCHED", "TRAINING_SPLITS", "read_obs_columns", "donor_keys",
           "split_table", "splits_from", "check_leakage"]


def leakage_rule(rule) -> dict:
    """Rule ``check_leakage``: no evaluation test donor of ``input.datasets`` (``params.names``) is a train/val
    donor of ``input.corpus``, matching donors on ``params.by``; the report goes to ``output.report``."""
    import logging

    from scjepa.io import write_json

    p, on = rule.params, list(rule.params["by"])
    corpus, datasets = rule.input["corpus"], rule.input["datasets"]
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    corpus_obs = read_obs_columns(corpus, [*on, "split"], key=f"datasets.{p['corpus']}.keep_columns")
    paths = {p["corpus"]: corpus, **dict(zip(p["names"], datasets))}
    evaluation = {n: read_obs_columns(f, [*on, "split"], key=f"datasets.{n}.keep_columns")
                  for n, f in zip(p["names"], datasets)}
    report = check_leakage(corpus_obs, evaluation, on, corpus=p["corpus"], paths=paths)
    logging.getLogger(__name__).info("no leak: %s", report)
    write_json(report, rule.output["report"])
    return report
