"""The benchmark at a glance: methods x every readout of every task, ranked, grouped by task family.

Data-driven from the task registry's tables: the summary rule hands this module each table's params (the
ones its ``table_*`` rule gets) and every score record; each table is rebuilt by the same library code
(:func:`scjepa.report.render.render_rule`, nothing written), so a new task's table appears here without an
edit. Every numeric column of every table is a readout, except the columns of :data:`NOT_SCORES` (a chosen
hyper-parameter such as the bridge's σ is not better when smaller). The ablation table is left out: its
rows are scJEPA variants, not methods, and its columns repeat Table 1's.

Ranks: within a readout, among the methods only (controls excluded), on the value the table displays
(rounded to its digits, the same rounding that decides bold): rank 1 is the bold cell, ties share the better
rank (competition ranking, 1-1-3). A control is not ranked against the methods; it shows, in parentheses,
the rank it would take if it were inserted among them, which says at once whether the methods beat the
floor (a negative control) or how far they are from the ceiling (a positive one).

Task families (annotation, integration, spatial, dynamics): a method's family score is the mean of its
ranks over the family's readouts it has a value in (n/a readouts, e.g. PCA's fine-tuning, do not count);
the family rank orders the methods by that mean rank. Raw scores are never averaged across readouts:
macro-F1, scIB totals and Wasserstein distances have different scales and directions.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from scjepa.io import write_text

#: task -> family shown in the summary; a task not listed is its own family (a user's task)
FAMILIES = {"zero_shot": "annotation", "finetune": "annotation", "integration": "integration",
            "spatial": "spatial", "bridge": "dynamics"}
FAMILY_ORDER = ("annotation", "integration", "spatial", "dynamics")
#: table columns that are not scores (a chosen hyper-parameter)
NOT_SCORES = frozenset({"sigma"})
OVERALL = "mean rank"


@dataclass(frozen=True)
class Readout:
    """One summary column: a numeric column of a registry table."""

    table: str
    family: str
    metric: str
    dataset: str
    label: str  # "dataset / readout / metric", as the table's header
    higher_is_better: bool


@dataclass
class Summary:
    methods: list[str]  # methods first, then controls (the tables' order)
    labels: list[str]
    controls: dict[str, str]
    readouts: list[Readout]
    status: list[list[str]]  # per method, per readout: "ok" | "n/a" | "failed" | "no truth"
    scores: list[list[float]]  # the displayed (rounded) mean; NaN unless ok
    ranks: list[list[float]]  # methods: rank among methods; controls: the rank they would take; NaN: none
    families: list[str]
    mean_rank: list[list[float]]  # per method, per family (NaN: no ranked readout)
    family_rank: list[list[float]]  # per method, per family; NaN for controls and unranked methods
    n_ranked: list[list[int]]  # per method, per family: readouts the mean is over
    notes: list[str] = field(default_factory=list)

    def is_control(self, i: int) -> bool:
        return self.methods[i] in self.controls


def family_of(task: str) -> str:
    return FAMILIES.get(task, task)


def _competition_rank(value: float, others: Sequence[float], higher_is_better: bool) -> int:
    """1 + how many of ``others`` are strictly better than ``value`` (ties share the better rank)."""
    better = sum(1 for o in others if (o > value if higher_is_better else o < value))
    return 1 + better


def build_summary(tables: Sequence[tuple[str, Any]], *, controls: Mapping[str, str] | None = None,
                  methods: Sequence[str] | None = None, row_labels: Mapping[str, str] | None = None) -> Summary:
    """``tables``: (family, :class:`scjepa.report.tables.Table`) in display order. ``methods``: the rows
    (default: every row of the tables that is not a baseline row, in first-seen order)."""
    controls = dict(controls or {})
    tables = list(tables)
    if methods is None:
        seen: list[str] = []
        for _, tab in tables:
            seen += [r for r in tab.rows if r not in seen and not r.startswith("baseline:")]
        methods = seen
    methods = [m for m in methods if m not in controls] + [m for m in methods if m in controls]
    labels = []
    for m in methods:
        lab = str((row_labels or {}).get(m, m))
        if m in controls:
            from scjepa.report.tables import CONTROL_MARK

            lab = f"{lab} ({CONTROL_MARK.get(controls[m], 'control')})"
        labels.append(lab)
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    fam_seen = [f for f, _ in tables]
    families = sorted(dict.fromkeys(fam_seen), key=lambda f: (order.get(f, len(order)), fam_seen.index(f)))
    readouts: list[Readout] = []
    status: list[list[str]] = [[] for _ in methods]
    scores: list[list[float]] = [[] for _ in methods]
    for fam in families:
        for f, tab in tables:
            if f != fam:
                continue
            row_of = {r: i for i, r in enumerate(tab.rows)}
            for j, col in enumerate(tab.columns):
                if col.metric in NOT_SCORES:
                    continue
                cells = [tab.cells[row_of[m]][j] if m in row_of else None for m in methods]
                if not any(c is not None and c.status == "ok" for c in cells) and all(
                        c is None or c.status == "n/a" for c in cells):
                    continue  # a column no method has a number in (e.g. the probe switched off)
                readouts.append(Readout(tab.name, fam, col.metric, col.dataset, " / ".join(col.header),
                                        col.higher_is_better))
                for i, c in enumerate(cells):
                    st = "n/a" if c is None else c.status
                    status[i].append(st)
                    scores[i].append(round(c.mean, tab.digits) if st == "ok" else math.nan)
    ranks: list[list[float]] = [[math.nan] * len(readouts) for _ in methods]
    for j, ro in enumerate(readouts):
        pool = [scores[i][j] for i, m in enumerate(methods) if m not in controls and status[i][j] == "ok"]
        for i, m in enumerate(methods):
            if status[i][j] == "ok" and pool:
                # a method's own value is in the pool but never strictly better than itself
                ranks[i][j] = float(_competition_rank(scores[i][j], pool, ro.higher_is_better))
    mean_rank = [[math.nan] * len(families) for _ in methods]
    n_ranked = [[0] * len(families) for _ in methods]
    for i in range(len(methods)):
        for k, fam in enumerate(families):
            rs = [ranks[i][j] for j, ro in enumerate(readouts) if ro.family == fam and not math.isnan(ranks[i][j])]
            n_ranked[i][k] = len(rs)
            if rs:
                mean_rank[i][k] = math.fsum(rs) / len(rs)
    family_rank = [[math.nan] * len(families) for _ in methods]
    for k in range(len(families)):
        pool = [round(mean_rank[i][k], 2) for i, m in enumerate(methods)
                if m not in controls and not math.isnan(mean_rank[i][k])]
        for i, m in enumerate(methods):
            if m not in controls and not math.isnan(mean_rank[i][k]):
                family_rank[i][k] = float(_competition_rank(round(mean_rank[i][k], 2), pool, False))
    notes = [
        "Cells: the method's rank in that readout among the methods (1 = best, the bold cell of the task's "
        "table; ties share the better rank), on the value the table shows.",
        f"'{OVERALL}': the mean of a method's ranks over the family's readouts it has a value in; 'rank' orders "
        "the methods by it. Raw scores of different readouts are never averaged.",
        "Controls are not ranked: in parentheses, the rank a control would take among the methods.",
        "n/a: the method does not serve the readout; failed: its job failed or left no record; no truth: the "
        "dataset has no ground truth for it. Readouts from the task tables (Table 4, the ablation, is left out; "
        "the bridge's chosen σ is a setting, not a score).",
    ]
    return Summary(list(methods), labels, controls, readouts, status, scores, ranks, families, mean_rank,
                   family_rank, n_ranked, notes)


# --------------------------------------------------------------------------- tables


def _rank_text(s: Summary, i: int, j: int) -> str:
    st = s.status[i][j]
    if st != "ok":
        return st
    r = s.ranks[i][j]
    if math.isnan(r):
        return "n/a"
    return f"({int(r)})" if s.is_control(i) else str(int(r))


def _family_cells(s: Summary, i: int, k: int) -> tuple[str, str]:
    mr = s.mean_rank[i][k]
    if math.isnan(mr):
        return "n/a", "n/a"
    if s.is_control(i):
        return f"({mr:.2f})", "—"
    return f"{mr:.2f}", str(int(s.family_rank[i][k]))


def summary_rows(s: Summary) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table: per family its mean rank and rank, then every readout."""
    head = ["method"]
    for fam in s.families:
        head += [f"{fam} / {OVERALL}", f"{fam} / rank"]
    head += [f"{ro.family} / {ro.label}" for ro in s.readouts]
    rows = []
    for i, lab in enumerate(s.labels):
        line = [lab]
        for k in range(len(s.families)):
            line += list(_family_cells(s, i, k))
        line += [_rank_text(s, i, j) for j in range(len(s.readouts))]
        rows.append(line)
    return head, rows


def summary_markdown(s: Summary, caption: str = "") -> str:
    head, rows = summary_rows(s)
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in head) + " |", "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    nfam = 2 * len(s.families)
    for i, line in enumerate(rows):
        cells = [esc(c) for c in line]
        for k in range(len(s.families)):  # the family winners in bold (methods only)
            if not s.is_control(i) and s.family_rank[i][k] == 1:
                cells[2 + 2 * k] = f"**{cells[2 + 2 * k]}**"
        for j in range(len(s.readouts)):
            if not s.is_control(i) and s.ranks[i][j] == 1:
                cells[1 + nfam + j] = f"**{cells[1 + nfam + j]}**"
        lines.append("| " + " | ".join(cells) + " |")
    out = [f"**table_summary.** {caption}\n"] if caption else []
    return "\n".join(out + ["\n".join(lines), "", " ".join(s.notes)]) + "\n"


def summary_csv(s: Summary) -> str:
    head, rows = summary_rows(s)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    w.writerows(rows)
    return buf.getvalue()


def summary_latex(s: Summary, caption: str = "") -> str:
    """The compact table for a paper: the family columns only (every readout is in the figure and the CSV)."""
    from scjepa.report.tables import _tex

    cols = "l" + "rr" * len(s.families)
    lines = ["% requires \\usepackage{booktabs}", "\\begin{table}[ht]", "\\centering", "\\small"]
    if caption:
        lines.append(f"\\caption{{{_tex(caption)}}}")
    lines += ["\\label{tab:table_summary}", f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
              " & ".join([""] + [f"\\multicolumn{{2}}{{c}}{{{_tex(f)}}}" for f in s.families]) + " \\\\",
              " ".join(f"\\cmidrule(lr){{{2 + 2 * k}-{3 + 2 * k}}}" for k in range(len(s.families))),
              " & ".join(["method"] + [_tex(OVERALL), "rank"] * len(s.families)) + " \\\\", "\\midrule"]
    for i, lab in enumerate(s.labels):
        cells = [_tex(lab)]
        for k in range(len(s.families)):
            mr, rk = _family_cells(s, i, k)
            if not s.is_control(i) and s.family_rank[i][k] == 1:
                mr, rk = f"\\textbf{{{mr}}}", f"\\textbf{{{rk}}}"
            cells += [_tex(mr) if "textbf" not in mr else mr, _tex(rk) if "textbf" not in rk else rk]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\par\\smallskip{{\\footnotesize {_tex(' '.join(s.notes))}}}",
              "\\end{table}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figure

_STATUS_TEXT = {"n/a": "n/a", "failed": "failed", "no truth": "no truth"}


def _short_label(ro: Readout) -> str:
    """Column label: the header without the family (shown above the group)."""
    return ro.label


def fig_summary(s: Summary, *, png=None, pdf=None):
    """Heatmap: rows = methods (controls below a gap, grey labels), columns = each family's rank column
    then its readouts. A readout cell is coloured by the score scaled within its column (dark = better,
    whatever the metric's direction) and annotated with the rank; family cells by the mean rank."""
    import matplotlib
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    from scjepa.report.figures import _ACTIVE, _figure, save_figure

    cmap = colormaps["YlGnBu"]
    n_rows = len(s.methods)
    n_methods = sum(1 for m in s.methods if m not in s.controls)
    gap_row = 0.5 if s.controls and n_methods else 0.0
    # column layout: per family [overall, readouts...] with a gap between families
    cols: list[tuple[str, int, float]] = []  # (kind, index, x)
    x = 0.0
    group_spans = []
    for k, fam in enumerate(s.families):
        start = x
        cols.append(("family", k, x))
        x += 1.25
        for j, ro in enumerate(s.readouts):
            if ro.family == fam:
                cols.append(("readout", j, x))
                x += 1.0
        group_spans.append((fam, start, x))
        x += 0.6
    width_units = max(x - 0.6, 1.0)

    def ypos(i):
        return i + (gap_row if i >= n_methods else 0.0)

    cell_in = 0.33  # inches per cell: 7 pt labels stay legible at 100 % zoom
    with matplotlib.rc_context(_ACTIVE):
        fig = _figure(1.9 + cell_in * width_units, 2.6 + cell_in * (n_rows + gap_row))
        ax = fig.add_subplot(111)
        for kind, idx, x0 in cols:
            w = 1.15 if kind == "family" else 0.94
            if kind == "readout":
                ro = s.readouts[idx]
                vals = [s.scores[i][idx] for i in range(n_rows) if s.status[i][idx] == "ok"]
                lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
            else:
                vals = [s.mean_rank[i][idx] for i in range(n_rows) if not math.isnan(s.mean_rank[i][idx])]
                lo, hi = (min(vals), max(vals)) if vals else (1.0, 1.0)
            for i in range(n_rows):
                y = ypos(i)
                if kind == "readout":
                    ok = s.status[i][idx] == "ok"
                    if ok:
                        v = s.scores[i][idx]
                        t = 0.5 if hi == lo else (v - lo) / (hi - lo)
                        t = t if ro.higher_is_better else 1 - t
                    text = _rank_text(s, i, idx) if ok else _STATUS_TEXT.get(s.status[i][idx], s.status[i][idx])
                else:
                    mr = s.mean_rank[i][idx]
                    ok = not math.isnan(mr)
                    if ok:
                        t = 0.5 if hi == lo else 1 - (mr - lo) / (hi - lo)
                    text = (f"({mr:.1f})" if s.is_control(i) else f"{int(s.family_rank[i][idx])}") if ok else "n/a"
                face = cmap(0.12 + 0.8 * t) if ok else to_rgba("0.93")
                ax.add_patch(Rectangle((x0, y), w, 0.94, facecolor=face, edgecolor="none"))
                dark = ok and (0.12 + 0.8 * t) > 0.55
                bold = ok and not s.is_control(i) and text == "1"
                fs = 7 if ok and kind == "readout" else (8 if kind == "family" else 5.5)
                ax.text(x0 + w / 2, y + 0.47, text, ha="center", va="center", fontsize=fs,
                        color="white" if dark else ("0.2" if ok else "0.45"),
                        fontweight="bold" if bold or (kind == "family" and ok and not s.is_control(i)) else "normal",
                        fontstyle="italic" if s.is_control(i) else "normal")
            if kind == "family":
                ax.add_patch(Rectangle((x0, 0), 1.15, ypos(n_rows - 1) + 0.94, facecolor="none", edgecolor="0.2",
                                       linewidth=0.8))
        ax.set_xlim(-0.1, width_units + 0.1)
        ax.set_ylim(ypos(n_rows - 1) + 1.0, -0.1)
        ax.set_yticks([ypos(i) + 0.47 for i in range(n_rows)], s.labels)
        for i, lab in enumerate(ax.get_yticklabels()):
            if s.is_control(i):
                lab.set_color("0.35")
                lab.set_fontstyle("italic")
        ax.set_xticks([x0 + (1.15 if kind == "family" else 0.94) / 2 for kind, _, x0 in cols],
                      [("rank (" + OVERALL + ")") if kind == "family" else _short_label(s.readouts[idx])
                       for kind, idx, _ in cols], rotation=90, fontsize=7)
        for tick, (kind, _, _) in zip(ax.get_xticklabels(), cols):
            if kind == "family":
                tick.set_fontweight("bold")
        ax.xaxis.tick_top()
        ax.tick_params(length=0, pad=2)
        for sp in ax.spines.values():
            sp.set_visible(False)
        # family names under the grid, one per group, with a bracket line
        ybot = ypos(n_rows - 1) + 1.0
        for fam, a, b in group_spans:
            ax.plot([a + 0.05, b - 0.05], [ybot + 0.25, ybot + 0.25], color="0.2", linewidth=0.8, clip_on=False)
            ax.text((a + b) / 2, ybot + 0.45, fam, ha="center", va="top", fontsize=8, fontweight="bold",
                    clip_on=False)
        ax.set_ylim(ybot + 1.2, -0.1)
        # the key under the figure, wrapped to its width by hand: a supxlabel is laid out by the constrained
        # layout (it never runs into the family names), matplotlib's own wrap is not measured by it
        import textwrap

        width_in = fig.get_figwidth()
        note = ("Cells: rank among the methods (1 = best), colour = score within the readout (darker = better). "
                "Family column: rank by mean rank. Controls (grey, italic): the rank they would take, in parentheses.")
        fig.supxlabel("\n".join(textwrap.wrap(note, max(40, int(width_in * 72 / 3.6)))), fontsize=7, color="0.3")
    save_figure(fig, png=png, pdf=pdf)
    return fig


# --------------------------------------------------------------------------- rule entry point


def summary_rule(rule) -> Summary:
    """The ``report_summary`` rule's entry point (``scjepa.rule.run``).

    ``input.scores``: every score record the tables read. ``params.tables``: a list of ``{"family", "params"}``
    (``params`` = the table rule's params, see ``workflow/rules/common.smk``'s ``table_params``), in registry
    order. ``params.methods``, ``params.row_labels``, ``params.controls`` (method -> negative|positive),
    ``params.style``, ``params.dpi``, ``params.caption``. Outputs: ``md``, ``csv``, ``tex``, ``png``, ``pdf``.
    """
    from scjepa.report.figures import set_style
    from scjepa.report.render import render_rule

    scores = rule.input["scores"]
    scores = [scores] if isinstance(scores, str) else list(scores)
    built = []
    for spec in rule.params["tables"]:
        # rebuilt by the tables' own code (nothing written): the summary shows exactly what the tables show
        built.append((spec["family"], render_rule({"scores": scores}, spec["params"], {})))
    s = build_summary(built, controls=rule.params.get("controls"), methods=rule.params.get("methods"),
                      row_labels=rule.params.get("row_labels"))
    caption = rule.params.get("caption") or ("The benchmark at a glance: each method's rank in every readout "
                                             "and per task family.")
    out = rule.output
    if out.get("md"):
        write_text(summary_markdown(s, caption), out["md"])
    if out.get("csv"):
        write_text(summary_csv(s), out["csv"])
    if out.get("tex"):
        write_text(summary_latex(s, caption), out["tex"])
    if out.get("png") or out.get("pdf"):
        set_style(rule.params.get("style"), rule.params.get("dpi"))
        fig_summary(s, png=out.get("png"), pdf=out.get("pdf"))
    return s
