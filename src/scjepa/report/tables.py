"""Paper-style result tables (Tables 1-4, integration, and any generic method x dataset table).

Layout: rows = methods, columns = datasets x (task, metric), e.g. ``pbmc / kNN / macro-F1``.
Every expected cell is shown: a number (``mean ± sd`` where there are several seeds), ``n/a``
where the method cannot serve the task (declared in ``na`` or recorded with status "n/a"), or
``failed`` where the job failed (status "failed") or its record is missing. The best value of
each column is bold in Markdown and LaTeX (ties at the displayed precision are all bold).

Renderers (:func:`to_markdown`, :func:`to_csv`, :func:`to_latex`) are pure functions of the
:class:`Table`; the same inputs give byte-identical files (fixed float format, records sorted
before aggregation).

``na`` entries are ``(task, method, dataset)`` tuples or ``{"task", "method", "dataset"}`` dicts;
``"*"`` or an absent key matches anything (e.g. ``{"task": "finetune", "method": "pca"}``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from scjepa.io import write_text
from scjepa.contracts import read_score

log = logging.getLogger(__name__)

NA, FAILED = "n/a", "failed"
#: the method ran, but the dataset has no ground truth for this readout (e.g. no fate labels); a
#: record says so in ``metrics_unavailable: {metric: reason}``
NO_TRUTH = "no truth"
PARTIAL_MARK = "†"
METRIC_LABELS = {
    "macro_f1": "macro-F1",
    "micro_f1": "micro-F1",
    "weighted_f1": "weighted-F1",
    "accuracy": "accuracy",
    "hier_macro_f1": "hier. macro-F1",
    "hier_micro_f1": "hier. micro-F1",
    "bio_conservation": "bio",
    "batch_correction": "batch",
    "total": "total",
}


@dataclass(frozen=True)
class Column:
    """One table column: which records (task, dataset) and which metric; ``header`` = label levels."""

    task: str | None
    dataset: str
    metric: str
    header: tuple[str, ...]
    higher_is_better: bool = True


@dataclass
class Cell:
    status: str  # "ok" | "n/a" | "failed" | "no truth"
    mean: float = math.nan
    sd: float = math.nan
    n: int = 0
    partial: bool = False  # some expected seeds failed or are missing; the mean is over the rest
    best: bool = False


@dataclass
class Table:
    name: str
    rows: list[str]
    row_labels: list[str]
    columns: list[Column]
    cells: list[list[Cell]]
    caption: str = ""
    digits: int = 3
    notes: list[str] = field(default_factory=list)
    row_header: str = "method"


# --------------------------------------------------------------------------- records


def load_records(paths: Iterable[str | Path], *, missing_ok: bool = True) -> list[dict]:
    """Read score records; a path that does not exist is skipped (its cell renders ``failed``)."""
    records = []
    for p in paths:
        if missing_ok and not Path(p).exists():
            log.warning("score record %s is missing; its cell will show 'failed'", p)
            continue
        records.append(read_score(p))
    return records


def _na_match(na: Iterable[Any], task: str | None, method: str, dataset: str) -> bool:
    for entry in na or ():
        if isinstance(entry, Mapping):
            t, m, d = entry.get("task", "*"), entry.get("method", "*"), entry.get("dataset", "*")
        else:
            t, m, d = (list(entry) + ["*", "*", "*"])[:3]
        if all(p in ("*", None) or p == v for p, v in ((t, task), (m, method), (d, dataset))):
            return True
    return False


def _index(records: Iterable[Mapping]) -> dict[tuple, list[Mapping]]:
    idx: dict[tuple, list[Mapping]] = {}
    for r in records:
        idx.setdefault((r["task"], r["method"], r["dataset"]), []).append(r)
    for recs in idx.values():
        recs.sort(key=lambda r: (r.get("seed") is None, r.get("seed") or 0, str(r.get("_path", ""))))
    return idx


def _aggregate(recs: list[Mapping], metric: str, expected_seeds: Sequence[int] | None) -> Cell:
    if expected_seeds is not None and any(r.get("seed") is not None for r in recs):
        recs = [r for r in recs if r.get("seed") in set(expected_seeds)]
        missing_seeds = len(set(expected_seeds) - {r.get("seed") for r in recs})
    else:
        missing_seeds = 0
    if not recs:
        return Cell(FAILED)
    statuses = [r["status"] for r in recs]
    if "n/a" in statuses:
        return Cell(NA)
    ok = [r for r in recs if r["status"] == "ok"]
    if not ok:
        return Cell(FAILED)
    values = [float(r["metrics"][metric]) for r in ok if metric in r["metrics"]]
    if not values and any(metric in (r.get("metrics_unavailable") or {}) for r in ok):
        return Cell(NO_TRUTH)
    if not values:
        return Cell(NA)  # the task ran but this metric does not apply (e.g. probe switched off)
    n = len(values)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    partial = missing_seeds > 0 or len(ok) < len(recs)
    return Cell("ok", mean, sd, n, partial)


# --------------------------------------------------------------------------- building


def build_table(
    name: str,
    records: Iterable[Mapping],
    rows: Sequence[str],
    columns: Sequence[Column],
    *,
    na: Iterable[Any] = (),
    expected_seeds: Mapping[str, Sequence[int]] | None = None,
    row_labels: Mapping[str, str] | None = None,
    caption: str = "",
    digits: int = 3,
) -> Table:
    """Fill the rows x columns grid from score records and mark the best value per column."""
    idx = _index(records)
    na = list(na or ())
    cells: list[list[Cell]] = []
    for method in rows:
        line = []
        for col in columns:
            if _na_match(na, col.task, method, col.dataset):
                line.append(Cell(NA))
                continue
            recs = idx.get((col.task, method, col.dataset), [])
            seeds = (expected_seeds or {}).get(col.task) if col.task is not None else None
            line.append(_aggregate(recs, col.metric, seeds))
        cells.append(line)
    for j, col in enumerate(columns):
        vals = [round(cells[i][j].mean, digits) for i in range(len(rows)) if cells[i][j].status == "ok"]
        if not vals:
            continue
        best = max(vals) if col.higher_is_better else min(vals)
        for i in range(len(rows)):
            c = cells[i][j]
            if c.status == "ok" and round(c.mean, digits) == best:
                c.best = True
    notes = ["Best value per column in bold."]
    if any(c.n > 1 for line in cells for c in line):
        notes.append("mean ± sd over seeds/runs.")
    notes.append("n/a: the method cannot serve this task; failed: the job failed or produced no record.")
    if any(c.status == NO_TRUTH for line in cells for c in line):
        notes.append(f"{NO_TRUTH}: the dataset has no ground truth for this readout (the method ran).")
    if any(c.partial for line in cells for c in line):
        notes.append(f"{PARTIAL_MARK}: some seeds/runs failed or are missing; mean ± sd over the rest.")
    labels = [str((row_labels or {}).get(m, m)) for m in rows]
    return Table(name, list(rows), labels, list(columns), cells, caption, digits, notes)


def make_table(
    records: Iterable[Mapping],
    rows: Sequence[str],
    cols: Sequence[str],
    metric: str,
    *,
    task: str | None = None,
    name: str = "table",
    caption: str = "",
    na: Iterable[Any] = (),
    higher_is_better: bool = True,
    metric_label: str | None = None,
    row_labels: Mapping[str, str] | None = None,
    col_labels: Mapping[str, str] | None = None,
    expected_seeds: Sequence[int] | None = None,
    digits: int = 3,
) -> Table:
    """Generic table: rows = methods, cols = datasets, one metric (e.g. the bridge table).

    ``task``: which records to use; if None, the single task present in ``records`` (an error if
    there are several).
    """
    records = list(records)
    if task is None:
        tasks = sorted({r["task"] for r in records})
        if len(tasks) > 1:
            raise ValueError(f"records of several tasks {tasks}; pass task=")
        task = tasks[0] if tasks else None
    label = metric_label or METRIC_LABELS.get(metric, metric)
    columns = [Column(task, d, metric, (str((col_labels or {}).get(d, d)), label), higher_is_better) for d in cols]
    seeds = {task: list(expected_seeds)} if expected_seeds is not None and task is not None else None
    return build_table(
        name, records, rows, columns, na=na, expected_seeds=seeds, row_labels=row_labels, caption=caption, digits=digits
    )


def annotation_columns(
    datasets: Sequence[str],
    *,
    zero_shot_task: str = "zero_shot",
    finetune_task: str | None = "finetune",
    probe: bool = False,
    transfer_task: str | None = None,
    metrics: Sequence[str] = ("macro_f1", "micro_f1"),
    dataset_labels: Mapping[str, str] | None = None,
    hierarchy: bool = False,
) -> list[Column]:
    """Per dataset: kNN (zero-shot) metrics, [linear probe], fine-tune metrics, [transfer].

    ``hierarchy``: each readout also shows scTab's hierarchy-corrected macro-/micro-F1 (``hier_*``)."""
    if hierarchy:
        metrics = tuple(metrics) + tuple(f"hier_{m}" for m in metrics if not m.startswith("hier_"))
    cols: list[Column] = []
    for d in datasets:
        dl = str((dataset_labels or {}).get(d, d))
        for m in metrics:
            cols.append(Column(zero_shot_task, d, f"knn_{m}", (dl, "kNN", METRIC_LABELS.get(m, m))))
        if probe:
            for m in metrics:
                cols.append(Column(zero_shot_task, d, f"probe_{m}", (dl, "linear probe", METRIC_LABELS.get(m, m))))
        if finetune_task:
            for m in metrics:
                cols.append(Column(finetune_task, d, m, (dl, "fine-tune", METRIC_LABELS.get(m, m))))
        if transfer_task:
            for m in metrics:
                cols.append(Column(transfer_task, d, f"transfer_{m}", (dl, "transfer", METRIC_LABELS.get(m, m))))
    return cols


def _annotation_table(
    name, caption, records, methods, datasets, *, na, seeds, row_labels, dataset_labels, probe, digits, hierarchy=False
):
    cols = annotation_columns(datasets, probe=probe, dataset_labels=dataset_labels, hierarchy=hierarchy)
    expected = {"finetune": list(seeds)} if seeds is not None else None
    records = list(records)
    table = build_table(
        name,
        records,
        methods,
        cols,
        na=na,
        expected_seeds=expected,
        row_labels=row_labels,
        caption=caption,
        digits=digits,
    )
    table.notes.extend(record_notes(records, methods, datasets, row_labels=row_labels, dataset_labels=dataset_labels))
    return table


def record_notes(records, methods, datasets, *, row_labels=None, dataset_labels=None, task="zero_shot") -> list[str]:
    """Notes written from the score records, not from the config: each pretrained method's training budget
    (steps, epochs, batch: what the embedding's model ran) and each dataset's size, source (the embedded world's
    seed) and kNN query size. Records without these keys (older runs) add nothing."""
    budgets: dict[tuple, list[str]] = {}
    data: dict[str, tuple] = {}
    for r in sorted(records, key=lambda r: (str(r.get("method")), str(r.get("dataset")))):
        if r.get("task") != task or r.get("status") != "ok" or r.get("method") not in methods:
            continue
        conf = r.get("config") or {}
        tr = conf.get("training")
        if tr:
            key = (tr.get("steps"), tr.get("epochs"), tr.get("batch_size"))
            if r["method"] not in budgets.setdefault(key, []):
                budgets[key].append(r["method"])
        if conf.get("data") and r.get("dataset") in datasets and r["dataset"] not in data:
            data[r["dataset"]] = (conf["data"], r.get("metrics", {}).get("n_query"))
    notes = []
    if budgets:
        order = {m: i for i, m in enumerate(methods)}
        parts = []
        for (steps, epochs, batch), ms in sorted(budgets.items(), key=lambda kv: min(order[m] for m in kv[1])):
            names = ", ".join(str((row_labels or {}).get(m, m)) for m in sorted(ms, key=order.get))
            parts.append(f"{names}: {steps:,} steps ({epochs} epoch{'s' if epochs != 1 else ''}, batch {batch})")
        notes.append("Pretraining budget (from the score records): " + "; ".join(parts) + ".")
    if data:
        parts = []
        for d in datasets:
            if d not in data:
                continue
            info, n_query = data[d]
            world = f", embedded world seed {info['world_seed']}" if "world_seed" in info else ""
            query = f", {int(n_query):,} query cells" if n_query is not None else ""
            parts.append(f"{(dataset_labels or {}).get(d, d)}: {int(info['n_cells']):,} cells{world}{query}")
        notes.append("Data (from the score records): " + "; ".join(parts) + ".")
    return notes


def _annotation_table_named(name: str, caption: str):
    """Tables 1, 2 and 4 share one layout; they differ in name and caption only."""

    def table(records, methods, datasets, *, na=(), seeds=None, row_labels=None, dataset_labels=None,
              probe=False, digits=3, hierarchy=False, k=5) -> Table:
        return _annotation_table(name, caption.format(k=k), records, methods, datasets, na=na, seeds=seeds,
                                 row_labels=row_labels, dataset_labels=dataset_labels, probe=probe, digits=digits,
                                 hierarchy=hierarchy)

    table.__name__ = name
    table.__doc__ = f"{name}: {caption} (k: the kNN's neighbours, from the config)"
    return table


#: Table 1: zero-shot kNN and fine-tuning on the in-distribution datasets.
table1_in_distribution = _annotation_table_named(
    "table1_in_distribution",
    "Cell-type annotation on in-distribution datasets: zero-shot kNN (k = {k}) and fine-tuning.")
#: Table 2: the same on the out-of-distribution datasets.
table2_out_of_distribution = _annotation_table_named(
    "table2_out_of_distribution",
    "Cell-type annotation on out-of-distribution datasets: zero-shot kNN (k = {k}) and fine-tuning.")
#: Table 4: scJEPA ablation variants (rows), zero-shot kNN and fine-tuning.
table4_ablation = _annotation_table_named(
    "table4_ablation", "Ablation of scJEPA: zero-shot kNN (k = {k}) and fine-tuning.")


def table3_spatial(
    records, methods, datasets, *, na=(), seeds=None, row_labels=None, dataset_labels=None, transfer=True, digits=3,
    hierarchy=False,
) -> Table:
    """Table 3: spatial dataset(s): within-dataset kNN (task "spatial"), fine-tuning, cross-platform transfer."""
    cols = annotation_columns(
        datasets, zero_shot_task="spatial", transfer_task="spatial" if transfer else None, dataset_labels=dataset_labels,
        hierarchy=hierarchy,
    )
    expected = {"finetune": list(seeds)} if seeds is not None else None
    cap = "Spatial transcriptomics: zero-shot kNN, fine-tuning and cross-platform transfer (dissociated reference)."
    return build_table(
        "table3_spatial",
        records,
        methods,
        cols,
        na=na,
        expected_seeds=expected,
        row_labels=row_labels,
        caption=cap,
        digits=digits,
    )


def table_integration(
    records, methods, datasets, *, na=(), seeds=None, row_labels=None, dataset_labels=None, digits=3
) -> Table:
    """Integration (Fig. 2 as a table): scIB bio-conservation, batch-correction and total, mean ± sd over runs."""
    cols = [
        Column("integration", d, m, (str((dataset_labels or {}).get(d, d)), METRIC_LABELS[m]))
        for d in datasets
        for m in ("bio_conservation", "batch_correction", "total")
    ]
    expected = {"integration": list(seeds)} if seeds is not None else None
    cap = (
        "Data integration (scib-metrics, unscaled): bio-conservation, batch-correction and total (0.6 bio + 0.4 batch)."
    )
    return build_table(
        "table_integration",
        records,
        methods,
        cols,
        na=na,
        expected_seeds=expected,
        row_labels=row_labels,
        caption=cap,
        digits=digits,
    )


# --------------------------------------------------------------------------- rendering


def _fmt(cell: Cell, digits: int, pm: str = "±") -> str:
    if cell.status != "ok":
        return cell.status
    s = f"{cell.mean:.{digits}f}"
    if cell.n > 1:
        s += f" {pm} {cell.sd:.{digits}f}"
    if cell.partial:
        s += PARTIAL_MARK
    return s


def _header_strings(table: Table) -> list[str]:
    return [" / ".join(c.header) for c in table.columns]


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(table: Table) -> str:
    """GitHub-flavoured Markdown table; best values **bold**; notes below."""
    head = [table.row_header] + _header_strings(table)
    lines = [
        "| " + " | ".join(_md_escape(h) for h in head) + " |",
        "|" + "|".join([":---"] + ["---:"] * len(table.columns)) + "|",
    ]
    for label, cells in zip(table.row_labels, table.cells):
        vals = []
        for c in cells:
            s = _md_escape(_fmt(c, table.digits))
            vals.append(f"**{s}**" if c.best else s)
        lines.append("| " + " | ".join([_md_escape(label)] + vals) + " |")
    out = []
    if table.caption:
        out.append(f"**{table.name}.** {table.caption}\n")
    out.append("\n".join(lines))
    if table.notes:
        out.append("\n" + " ".join(table.notes))
    return "\n".join(out) + "\n"


def to_csv(table: Table) -> str:
    """Same layout as the paper table (one header row, levels joined by ' / '); no bold; deterministic."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([table.row_header] + _header_strings(table))
    for label, cells in zip(table.row_labels, table.cells):
        w.writerow([label] + [_fmt(c, table.digits) for c in cells])
    return buf.getvalue()


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _tex(s: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(s))


def _tex_cell(cell: Cell, digits: int) -> str:
    if cell.status != "ok":
        return _tex(cell.status)
    s = f"{cell.mean:.{digits}f}"
    if cell.n > 1:
        s += rf" $\pm$ {cell.sd:.{digits}f}"
    if cell.partial:
        s += r"$^\dagger$"
    return rf"\textbf{{{s}}}" if cell.best else s


def to_latex(table: Table) -> str:
    """A booktabs ``table`` environment with multi-level headers (\\multicolumn + \\cmidrule)."""
    ncol = len(table.columns)
    depth = max((len(c.header) for c in table.columns), default=1)
    headers = [(("",) * (depth - len(c.header))) + tuple(c.header) for c in table.columns]
    lines = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table}[ht]",
        "\\centering",
        "\\small",
    ]
    if table.caption:
        lines.append(f"\\caption{{{_tex(table.caption)}}}")
    lines.append(f"\\label{{tab:{table.name}}}")
    lines.append("\\begin{tabular}{l" + "r" * ncol + "}")
    lines.append("\\toprule")
    for level in range(depth):
        spans: list[tuple[str, int, int]] = []  # (text, first col, width)
        for j, h in enumerate(headers):
            key = h[: level + 1]
            if spans and headers[spans[-1][1]][: level + 1] == key and level < depth - 1:
                text, start, width = spans[-1]
                spans[-1] = (text, start, width + 1)
            else:
                spans.append((h[level], j, 1))
        row = [table.row_header if level == depth - 1 else ""]
        rules = []
        for text, start, width in spans:
            row.append(f"\\multicolumn{{{width}}}{{c}}{{{_tex(text)}}}" if width > 1 else _tex(text))
            if level < depth - 1 and text:
                rules.append(f"\\cmidrule(lr){{{start + 2}-{start + width + 1}}}")
        lines.append(" & ".join(row) + " \\\\")
        if rules:
            lines.append(" ".join(rules))
    lines.append("\\midrule")
    for label, cells in zip(table.row_labels, table.cells):
        lines.append(" & ".join([_tex(label)] + [_tex_cell(c, table.digits) for c in cells]) + " \\\\")
    lines.append("\\bottomrule")
    lines.append("\\end{tabular}")
    if table.notes:
        note = _tex(" ".join(table.notes)).replace(PARTIAL_MARK, r"$^\dagger$").replace("±", r"$\pm$")
        lines.append(f"\\par\\smallskip{{\\footnotesize {note}}}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def write_table(table: Table, *, md=None, csv=None, tex=None) -> None:
    """Write the formats asked for (atomic writes)."""
    if md:
        write_text(to_markdown(table), md)
    if csv:
        write_text(to_csv(table), csv)
    if tex:
        write_text(to_latex(table), tex)


CONTROL_MARK = {"negative": "neg. control", "positive": "pos. control"}
CONTROL_NOTE = ("Controls, marked and never bold: a negative control is a floor (a random embedding; for integration "
                "the dataset's unintegrated expression PCs), a positive one a ceiling (the true cell types plus noise).")


def mark_controls(table: Table, controls: Mapping[str, str] | None) -> Table:
    """Move control rows (row -> "negative" / "positive") to the bottom, mark their labels, and make bold only
    the best of the methods: a control is a reference point, not a competitor."""
    controls = {r: k for r, k in (controls or {}).items() if r in table.rows}
    if not controls:
        return table
    order = [i for i, r in enumerate(table.rows) if r not in controls] + \
            [i for i, r in enumerate(table.rows) if r in controls]
    table.rows = [table.rows[i] for i in order]
    table.row_labels = [table.row_labels[i] + (f" ({CONTROL_MARK[controls[table.rows[k]]]})"
                                                if table.rows[k] in controls else "")
                        for k, i in enumerate(order)]
    table.cells = [table.cells[i] for i in order]
    for j, col in enumerate(table.columns):
        ranked = any(line[j].best for line in table.cells)  # a column its renderer left unranked stays so
        for line in table.cells:
            line[j].best = False
        vals = [round(line[j].mean, table.digits) for r, line in zip(table.rows, table.cells)
                if line[j].status == "ok" and r not in controls]
        if not vals or not ranked:
            continue
        best = max(vals) if col.higher_is_better else min(vals)
        for r, line in zip(table.rows, table.cells):
            if r not in controls and line[j].status == "ok" and round(line[j].mean, table.digits) == best:
                line[j].best = True
    table.notes.insert(1, CONTROL_NOTE)
    return table


SCALED_NOTE = ("Scaled between the controls, per column: 0 = the best negative control, 1 = the best positive "
               "control, (score − negative) / (positive − negative), in the direction that is better; never min–max "
               "across methods. Below 0: worse than the floor; above 1: beyond the ceiling.")


def scale_to_controls(table: Table, controls: Mapping[str, str] | None) -> Table | None:
    """The methods' scores scaled between the table's controls (``row -> "negative" | "positive"``), column by
    column; None when the table lacks a negative or a positive control row.

    In each column the floor is the best negative control and the ceiling the best positive one (best in the
    column's direction); a column where either control has no value, or where they coincide, is n/a. sd is
    scaled by the same factor. Higher is better in every scaled column.
    """
    controls = {r: k for r, k in (controls or {}).items() if r in table.rows}
    if not {"negative", "positive"} <= set(controls.values()):
        return None
    rows = [i for i, r in enumerate(table.rows) if r not in controls]
    columns, cells = [], [[] for _ in rows]
    for j, col in enumerate(table.columns):
        pick = max if col.higher_is_better else min

        def best_of(kind):
            vals = [table.cells[i][j].mean for i, r in enumerate(table.rows)
                    if controls.get(r) == kind and table.cells[i][j].status == "ok"]
            return pick(vals) if vals else math.nan

        neg, pos = best_of("negative"), best_of("positive")
        columns.append(Column(col.task, col.dataset, col.metric, col.header, True))
        for k, i in enumerate(rows):
            c = table.cells[i][j]
            if c.status != "ok":
                cells[k].append(Cell(c.status, partial=c.partial))
            elif math.isnan(neg) or math.isnan(pos) or pos == neg:
                cells[k].append(Cell(NA))
            else:
                span = pos - neg
                cells[k].append(Cell("ok", (c.mean - neg) / span, abs(c.sd / span) if c.n > 1 else math.nan,
                                     c.n, c.partial))
    for j in range(len(columns)):
        vals = [round(line[j].mean, table.digits) for line in cells if line[j].status == "ok"]
        for line in cells:
            line[j].best = bool(vals) and line[j].status == "ok" and round(line[j].mean, table.digits) == max(vals)
    notes = [SCALED_NOTE] + [n for n in table.notes if n != CONTROL_NOTE]
    caption = (table.caption + " " if table.caption else "") + "Scores scaled between the controls."
    return Table(f"{table.name}_scaled", [table.rows[i] for i in rows], [table.row_labels[i] for i in rows],
                 columns, cells, caption, table.digits, notes)
