"""Derived obs columns (a dataset's ``derive:`` config), computed once in preprocessing.

Some published files lack a column a task needs but hold what it is computed from. A dataset
declares each such column under ``derive:`` (new column name -> how), and preprocessing adds it to
the source's obs *before* the column mapping (``columns:``) and ``keep_columns`` are applied, so a
derived column is mapped or kept like any other. Kinds:

``map``
    ``{kind: map, from: <obs column>, values: {<label>: <value>, ...}}``: each cell's label in
    ``from`` replaced by its value (e.g. sample names -> numeric time point). Every label present
    must be listed; an unlisted one is an error naming the file, the column and the labels.

``clone_majority``
    ``{kind: clone_majority, clones: <obsm key>, label: <obs column>, time: <obs column>, at: <value>}``:
    lineage-tracing ground truth. ``obsm[clones]`` is a cells x clones membership matrix (non-zero =
    member; dense or sparse). A clone's fate is the most frequent ``label`` among its cells whose
    ``time`` equals ``at`` (as numbers where both are numeric, so ``6`` matches ``"6"`` and ``"6.0"``;
    else as text); ties go to the label that
    sorts first. Each cell gets the fate of its clone. Cells in no clone or in several, and cells
    whose clone has no cell at ``at``, have no fate (missing) -- except the cells at ``at`` themselves,
    which fall back to their own label. E.g. Weinreb et al. 2020 (LARRY): ``clones: X_clone``,
    ``label: state_info``, ``time: time_info``, ``at: 6``.

The result is categorical (missing values allowed). Errors name the file and the column or obsm key.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scjepa.errors import InputError

KINDS = ("map", "clone_majority")


def derive_columns(obs: pd.DataFrame, obsm: Mapping[str, Any], specs: Mapping[str, Mapping] | None, *,
                   path=None, dataset: str = "") -> pd.DataFrame:
    """``obs`` with the columns of ``specs`` added (a copy; ``obs`` itself is not changed)."""
    if not specs:
        return obs
    out = obs.copy()
    for name, spec in specs.items():
        key = f"datasets.{dataset}.derive.{name}" if dataset else f"derive.{name}"
        if not isinstance(spec, Mapping) or spec.get("kind") not in KINDS:
            raise InputError(f"needs kind: one of {', '.join(KINDS)}", key=key)
        if name in obs.columns:
            raise InputError(f"the source already has an obs column '{name}'; give the derived column "
                             "another name", path=path, key=key)
        if spec["kind"] == "map":
            out[name] = _map(out, spec, path=path, key=key)
        else:
            out[name] = clone_majority(out, obsm, spec, path=path, key=key)
    return out


def _need(obs: pd.DataFrame, col, *, path, key, what: str) -> pd.Series:
    if not col:
        raise InputError(f"needs '{what}' (an obs column)", key=key)
    if col not in obs.columns:
        raise InputError(f"column '{col}' (derive '{what}') is not in obs; obs has: "
                         f"{', '.join(map(str, obs.columns[:20]))}", path=path, column=col, key=key)
    return obs[col]


def _map(obs: pd.DataFrame, spec: Mapping, *, path, key) -> pd.Series:
    src = _need(obs, spec.get("from"), path=path, key=key, what="from")
    values = spec.get("values")
    if not isinstance(values, Mapping) or not values:
        raise InputError("needs values: a mapping {label: value}", key=key)
    lookup = {str(k): v for k, v in values.items()}
    labels = src.astype(str)
    unknown = sorted(set(labels.unique()) - set(lookup))
    if unknown:
        raise InputError(f"labels of '{spec['from']}' without a value in derive values: {unknown[:10]}",
                         path=path, column=str(spec["from"]), key=key)
    mapped = labels.map(lookup)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lookup.values()):
        return pd.Series(mapped.astype(np.float64).to_numpy(), index=obs.index)
    return pd.Series(pd.Categorical(mapped.astype(str).to_numpy()), index=obs.index)


def clone_majority(obs: pd.DataFrame, obsm: Mapping[str, Any], spec: Mapping, *, path=None,
                   key: str = "derive") -> pd.Series:
    """Each cell's clone fate (see the module docstring); categorical with missing values."""
    clones_key = spec.get("clones")
    if not clones_key:
        raise InputError("needs 'clones' (an obsm key)", key=key)
    if clones_key not in obsm:
        raise InputError(f"obsm '{clones_key}' (derive 'clones') is not in the file; obsm has: "
                         f"{', '.join(map(str, obsm.keys())) or 'nothing'}", path=path, column=str(clones_key),
                         key=key)
    if "at" not in spec:
        raise InputError("needs 'at' (the time value whose cells define each clone's fate)", key=key)
    label = _need(obs, spec.get("label"), path=path, key=key, what="label").astype(str).to_numpy()
    time = _need(obs, spec.get("time"), path=path, key=key, what="time").astype(str).to_numpy()
    M = obsm[clones_key]
    M = sp.csr_matrix(M) if not sp.issparse(M) else sp.csr_matrix(M)
    if M.shape[0] != len(obs):
        raise InputError(f"obsm '{clones_key}' has {M.shape[0]} rows but obs has {len(obs)}", path=path,
                         column=str(clones_key), key=key)
    M.eliminate_zeros()
    at = str(spec["at"])
    try:  # numbers compare as numbers (6 matches "6" and "6.0"), anything else as text
        time_num = pd.to_numeric(pd.Series(time)).to_numpy(dtype=np.float64)
        at_num = float(spec["at"])
    except (TypeError, ValueError):
        time_num = at_num = None
    n_memberships = np.diff(M.indptr)
    clone_of = np.full(len(obs), -1)
    single = n_memberships == 1
    clone_of[single] = M.indices[M.indptr[:-1][single]]
    terminal = (time_num == at_num) if time_num is not None else (time == at)
    if not terminal.any():
        raise InputError(f"no cell has {spec['time']} == {at!r} (derive 'at'); values: "
                         f"{sorted(set(time))[:10]}", path=path, column=str(spec["time"]), key=key)
    classes = np.array(sorted(set(label[terminal])))
    code = {c: i for i, c in enumerate(classes)}
    # clone x class counts over terminal cells (every membership counts, also of multi-clone cells)
    T = M[terminal].T.tocsr()  # clones x terminal cells
    onehot = sp.csr_matrix((np.ones(int(terminal.sum())), (np.arange(int(terminal.sum())),
                                                           [code[x] for x in label[terminal]])),
                           shape=(int(terminal.sum()), len(classes)))
    counts = np.asarray((T @ onehot).todense())
    has = counts.sum(axis=1) > 0
    majority = np.argmax(counts, axis=1)  # first maximum = the class sorting first on ties
    fate = np.full(len(obs), None, dtype=object)
    ok = (clone_of >= 0)
    ok[ok] = has[clone_of[ok]]
    fate[ok] = classes[majority[clone_of[ok]]]
    own = terminal & (fate == None)  # noqa: E711 - elementwise
    fate[own] = label[own]
    return pd.Series(pd.Categorical(fate, categories=list(dict.fromkeys([*classes, *label[own]]))),
                     index=obs.index)
