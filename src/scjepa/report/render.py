"""The table rules' entry point: one table from its rule's records and params, in every format.

It sits above :mod:`scjepa.report.tables` (the paper tables and the generic one) and
:mod:`scjepa.report.bridge_tables` (the bridge tables with their baseline rows) and dispatches to either, so
neither of those imports the other's caller.
"""

from __future__ import annotations

from typing import Mapping

from scjepa.report.bridge_tables import RENDERERS
from scjepa.report.tables import (Table, load_records, make_table, mark_controls, scale_to_controls,
                                  table1_in_distribution, table2_out_of_distribution, table3_spatial, table4_ablation,
                                  table_integration, write_table)


TABLES = ("table1_in_distribution", "table2_out_of_distribution", "table3_spatial", "table4_ablation",
          "table_integration", "generic", "table_bridge_interpolation", "table_bridge_fate", "table_bridge_perturbation")
KEEP_GOING_NOTE = (
    "Written after failed jobs (--keep-going): 'failed' cells have no score record; see logs/ for the failing "
    "rule. The next run rebuilds this table."
)


def render_rule(inputs: Mapping, params: Mapping, outputs: Mapping, *, after_failure: bool = False) -> Table:
    """Build and write one table from a table rule's ``input``/``params``/``output`` (plain mappings).

    Used by :func:`table_rule` (a normal job) and by the workflow's ``onerror`` handler under
    ``--keep-going`` (``after_failure=True``: missing records render ``failed`` and the table says it was
    written after failures). The params are those ``workflow/rules/common.smk``'s ``table_params`` gives.
    """
    paths = inputs["scores"]
    paths = [paths] if isinstance(paths, str) else list(paths)
    records = load_records(paths)
    which = params["table"]
    methods, datasets = list(params["methods"]), list(params["datasets"])
    common = dict(
        na=list(params.get("na") or []),
        seeds=params.get("seeds"),
        row_labels=params.get("row_labels"),
        dataset_labels=params.get("dataset_labels"),
        digits=int(params.get("digits") or 3),
    )
    probe = bool(params.get("probe", False))
    hier = {"hierarchy": True} if params.get("hierarchy") else {}  # only when switched on
    if which in ("table1_in_distribution", "table2_out_of_distribution", "table4_ablation"):
        table = globals()[which](records, methods, datasets, probe=probe, k=_k_of(records, params["k"]), **common,
                                 **hier)
    elif which == "table3_spatial":
        table = globals()[which](records, methods, datasets, **common, **hier)
    elif which == "table_integration":
        table = globals()[which](records, methods, datasets, **common)
    elif which.startswith("table_bridge_"):  # scjepa.report.bridge_tables: method + baseline rows
        table = RENDERERS[which](records, methods, datasets, **common)
    elif which == "generic":
        table = make_table(
            records,
            methods,
            datasets,
            params["metric"],
            task=params["task"],
            name=params["name"],
            caption=params.get("caption") or "",
            na=common["na"],
            higher_is_better=bool(params["higher_is_better"]),
            metric_label=params.get("metric_label"),
            row_labels=common["row_labels"],
            col_labels=common["dataset_labels"],
            expected_seeds=common["seeds"],
            digits=common["digits"],
        )
    else:
        raise ValueError(f"params.table must be one of {TABLES}, got {which!r}")
    mark_controls(table, params.get("controls"))
    if after_failure:
        table.notes.append(KEEP_GOING_NOTE)
    write_table(table, md=outputs.get("md"), csv=outputs.get("csv"), tex=outputs.get("tex"))
    if outputs.get("scaled_md") or outputs.get("scaled_csv"):  # the rule asks only where both controls are rows
        scaled = scale_to_controls(table, params.get("controls"))
        if scaled is None:
            raise ValueError(f"{table.name}: scaled outputs asked for, but the table lacks a negative or a positive "
                             "control row")
        if after_failure:
            scaled.notes.append(KEEP_GOING_NOTE)
        write_table(scaled, md=outputs.get("scaled_md"), csv=outputs.get("scaled_csv"))
    return table


def table_rule(rule) -> Table:
    """The ``table_*`` rules' entry point (``scjepa.rule.run``)."""
    return render_rule(rule.input, rule.params, rule.output)


def _k_of(records, configured) -> int:
    """The k the zero-shot records say they used (the caption reads the records); the rule's k when no record
    has run yet (a table written after failures) or the records disagree."""
    ks = {r.get("config", {}).get("k") for r in records if r.get("task") == "zero_shot" and r.get("status") == "ok"}
    ks.discard(None)
    return int(ks.pop()) if len(ks) == 1 else int(configured)

