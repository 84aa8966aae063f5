"""The bridge tables: methods and baseline rows, absolute values with their spread, read from the records.

Rows are the methods (each one's bridge, in its own latent) followed by the baselines every record of a dataset
holds with identical values (they do not depend on the latent: snapshot copies, the random coupling, the
bridge in the expression-PC reference space itself; the identity and mean-shift perturbation predictions).
Columns per dataset are data-driven: one per held-out time found in the records (``w1_bridge_t<k>``), then the
mean over held-out times, the ratio to the best snapshot baseline, the latent's exact-OT (σ = 0) W1 and the σ
chosen. Values are mean ± sd over seeds as the records give them (``<metric>`` and ``<metric>_sd``).
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

from scjepa.report.tables import NA, NO_TRUTH, Cell, Column, Table, _index, _na_match

#: baseline rows: (row id, label, metric prefix in the records)
INTERPOLATION_BASELINES = (("baseline:prev", "previous snapshot", "w1_prev"),
                           ("baseline:next", "next snapshot", "w1_next"),
                           ("baseline:random", "random coupling", "w1_random"),
                           ("baseline:expr_pcs", "expression PCs (bridge in the reference space)", "w1_expr_pcs"))
PERTURBATION_BASELINES = (("baseline:identity", "identity (control cells)", "identity"),
                          ("baseline:meanshift", "mean shift", "meanshift"),
                          ("baseline:observed", "observed (other half of the perturbed cells; floor)", "observed"))
FATE_METRICS = (("fate_accuracy", "accuracy", True), ("fate_brier", "Brier", False), ("fate_logloss", "log-loss", False))
PERTURBATION_METRICS = (("l2_means_ct", "l2 of means per type", False), ("mmd_ref_ct", "MMD per type", False),
                        ("w2_ref_ct", "W2 per type", False), ("r2_means_ct_top50", "r² top-50 markers per type", True))


def _ok(recs: Sequence[Mapping]) -> Mapping | None:
    return next((r for r in recs if r.get("status") == "ok"), None)


def _cell(rec: Mapping | None, metric: str, n_seeds: int, statuses: Sequence[str] = ()) -> Cell:
    if rec is None:
        return Cell(NA if "n/a" in statuses else "failed")
    m = rec.get("metrics") or {}
    if metric not in m:
        return Cell(NO_TRUTH if metric in (rec.get("metrics_unavailable") or {}) else NA)
    sd = m.get(metric + "_sd", math.nan)
    return Cell("ok", float(m[metric]), float(sd), n_seeds if math.isfinite(sd) else 1)


def _n_seeds(rec: Mapping | None) -> int:
    return len((rec or {}).get("config", {}).get("seeds") or [0]) if rec else 1


def _mark_best(cells: list[list[Cell]], columns: Sequence[Column], digits: int, skip: Sequence[int] = ()) -> None:
    for j, col in enumerate(columns):
        if j in skip or col.metric.startswith("sigma"):  # σ is a readout, not a score: never bold
            continue
        vals = [round(line[j].mean, digits) for line in cells if line[j].status == "ok"]
        if not vals:
            continue
        best = max(vals) if col.higher_is_better else min(vals)
        for line in cells:
            if line[j].status == "ok" and round(line[j].mean, digits) == best:
                line[j].best = True


def _build(name, methods, datasets, records, row_labels, dataset_labels, spec_cols, baselines, caption, notes,
           digits, skip_best=(), na=()):
    """spec_cols(dataset, ok_record) -> [(Column, method_metric, {baseline_id: metric or None})]."""
    idx = _index(records)
    cols: list[Column] = []
    per_col = []
    for d in datasets:
        first = None
        for m in methods:
            first = _ok(idx.get(("bridge", m, d), []))
            if first:
                break
        for col, mmetric, bmetrics in spec_cols(d, first):
            cols.append(col)
            per_col.append((d, mmetric, bmetrics, first))
    rows = list(methods) + [b[0] for b in baselines]
    labels = [str((row_labels or {}).get(m, m)) for m in methods] + [b[1] for b in baselines]
    cells = []
    for m in methods:
        line = []
        for d, mmetric, _, _ in per_col:
            if _na_match(na, "bridge", m, d):  # the method does not serve the bridge (e.g. a control)
                line.append(Cell(NA))
                continue
            recs = idx.get(("bridge", m, d), [])
            rec = _ok(recs)
            line.append(_cell(rec, mmetric, _n_seeds(rec), [r.get("status") for r in recs]) if mmetric else Cell(NA))
        cells.append(line)
    for bid, _, _ in baselines:
        line = []
        for d, _, bmetrics, first in per_col:
            metric = bmetrics.get(bid)
            line.append(_cell(first, metric, _n_seeds(first)) if metric else Cell(NA))
        cells.append(line)
    _mark_best(cells, cols, digits, skip_best)
    return Table(name, rows, labels, cols, cells, caption, digits, list(notes))


def table_bridge_interpolation(records, methods, datasets, *, row_labels=None, dataset_labels=None, digits=3, na=(), **_):
    def spec(d, rec):
        lab = str((dataset_labels or {}).get(d, d))
        ks = sorted({int(mt.group(1)) for k in ((rec or {}).get("metrics") or {})
                     if (mt := re.fullmatch(r"w1_bridge_t(\d+)", k))})
        out = []
        for k in ks:
            out.append((Column("bridge", d, f"w1_bridge_t{k}", (lab, f"W1 held-out t{k}"), False), f"w1_bridge_t{k}",
                        {b: f"{p}_t{k}" for b, _, p in INTERPOLATION_BASELINES}))
        out.append((Column("bridge", d, "w1_bridge", (lab, "W1 mean"), False), "w1_bridge",
                    {b: p for b, _, p in INTERPOLATION_BASELINES}))
        out.append((Column("bridge", d, "w1_bridge_rel_best_snapshot", (lab, "/ best snapshot"), False),
                    "w1_bridge_rel_best_snapshot", {b: f"{p}_rel_best_snapshot" for b, _, p in INTERPOLATION_BASELINES}))
        out.append((Column("bridge", d, "w1_exact_ot", (lab, "exact OT (σ=0) W1"), False), "w1_exact_ot", {}))
        out.append((Column("bridge", d, "sigma", (lab, "σ (·ŝ)"), False), "sigma",
                    {"baseline:expr_pcs": "sigma_expr_pcs"}))
        return out

    notes = ["Absolute W1 in the shared reference space (whitened expression PCs) between the held-out snapshot "
             "and each prediction; mean ± sd over bridge seeds. '/ best snapshot': W1 divided by the better of the "
             "previous/next snapshot copies at each held-out time, averaged (< 1 beats copying a neighbour).",
             "Method rows: the Schrödinger bridge in the method's latent at the σ chosen on validation time points "
             "(noise carried into the reference space); 'exact OT (σ=0)': the same latent without noise (McCann). "
             "σ: chosen value in units of the latent's scale ŝ, averaged over held-out times.",
             "Baseline rows do not depend on the latent (identical in every record). Best value per column in bold; "
             "n/a: not defined for that row."]
    return _build("table_bridge_interpolation", methods, datasets, records, row_labels, dataset_labels, spec,
                  INTERPOLATION_BASELINES, "Held-out time points: absolute W1 in the reference space (lower is better)",
                  notes, digits, na=na)


def table_bridge_fate(records, methods, datasets, *, row_labels=None, dataset_labels=None, digits=3, na=(), **_):
    chance = (("baseline:chance", "chance (terminal class frequencies)", None),)

    def spec(d, rec):
        lab = str((dataset_labels or {}).get(d, d))
        chance_of = {"fate_accuracy": "fate_chance"}  # the others: <metric>_chance
        return [(Column("bridge", d, m, (lab, label), hib), m, {"baseline:chance": chance_of.get(m, f"{m}_chance")})
                for m, label, hib in FATE_METRICS]

    notes = ["Fate probabilities pulled back from the last time point through chained couplings in each latent, "
             "scored on every earlier cell with a known fate: accuracy (higher is better), Brier score and "
             "log-loss (proper scoring rules, lower is better). Chance: the most frequent terminal class "
             "(accuracy) / the terminal class frequencies (Brier, log-loss). One deterministic value per record "
             "(no seeds). no truth: the dataset has no fate column."]
    return _build("table_bridge_fate", methods, datasets, records, row_labels, dataset_labels, spec, chance,
                  "Fate prediction from chained couplings", notes, digits, na=na)


def table_bridge_perturbation(records, methods, datasets, *, row_labels=None, dataset_labels=None, digits=3, na=(), **_):
    def spec(d, rec):
        lab = str((dataset_labels or {}).get(d, d))
        return [(Column("bridge", d, m, (lab, label), hib), m, {b: f"{m}_{p}" for b, _, p in PERTURBATION_BASELINES})
                for m, label, hib in PERTURBATION_METRICS]

    notes = ["Control → perturbed on a held-out half of the perturbed cells (CellOT's readouts): l2 of per-cell-type "
             "feature means (all genes), RBF-MMD and W2 per cell type in the reference space (whitened expression "
             "PCs), r² of per-type means on the top-50 marker genes; averaged over cell types (weights: held-out "
             "cells), conditions and seeds; mean ± sd over seeds. Method rows: a coupling in the method's latent; "
             "the observed row is the noise floor. Best value per column in bold."]
    return _build("table_bridge_perturbation", methods, datasets, records, row_labels, dataset_labels, spec,
                  PERTURBATION_BASELINES, "Perturbation transport: held-out readouts", notes, digits, na=na)


RENDERERS = {"table_bridge_interpolation": table_bridge_interpolation, "table_bridge_fate": table_bridge_fate,
             "table_bridge_perturbation": table_bridge_perturbation}
