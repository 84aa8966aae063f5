"""A sweep's table and figure: validation score per grid point, mean ± sd over pretraining seeds.

Rows are the grid points (labelled ``name=value, ...``), columns the validation readouts of the sweep's
records (:mod:`scjepa.tasks.sweep`); the best value of the chosen metric is bold and named in the notes as
the choice. The figure is a heatmap for a two-parameter grid (first parameter down, second across) and the
score per grid point with its spread otherwise. Nothing here reads a test split: the records hold
validation scores only.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from scjepa.report.tables import Column, Table, build_table, load_records, write_table

READOUTS = (("knn_macro_f1", "kNN macro-F1"), ("knn_micro_f1", "kNN micro-F1"), ("knn_accuracy", "kNN accuracy"))


def _point_key(i: int) -> str:
    return f"p{int(i):02d}"


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def sweep_table(name: str, records: Sequence[Mapping], points: Sequence[Mapping], *, metric: str = "knn_macro_f1",
                seeds: Sequence[int], dataset: str, base: str, description: str = "") -> Table:
    """The table of sweep ``name``: one row per grid point (``points`` in grid order)."""
    rekeyed = []
    for r in records:
        cfg = r.get("config", {})
        rekeyed.append({**r, "task": "sweep", "method": _point_key(cfg.get("point_index", -1)),
                        "seed": cfg.get("pretraining_seed"), "dataset": dataset})
    rows = [_point_key(i) for i in range(len(points))]
    labels = {_point_key(i): ", ".join(f"{k}={_fmt(v)}" for k, v in p.items()) for i, p in enumerate(points)}
    order = [metric] + [m for m, _ in READOUTS if m != metric]
    names = dict(READOUTS)
    columns = [Column("sweep", dataset, m, (dataset, names.get(m, m) + (" (chosen on)" if m == metric else "")))
               for m in order]
    caption = (f"Sweep '{name}' of {base}" + (f" ({description})" if description else "") +
               f": kNN from the train to the val split of {dataset}; test cells are never read. "
               f"{len(points)} grid point(s) x {len(seeds)} pretraining seed(s) {list(seeds)}.")
    table = build_table(f"sweep_{name}", rekeyed, rows, columns, expected_seeds={"sweep": list(seeds)},
                        row_labels=labels, caption=caption)
    table.row_header = "grid point"
    best = [i for i, row in enumerate(table.cells) if row[0].best]
    if best:
        table.notes.insert(0, "Chosen (best " + names.get(metric, metric) + " on val): " +
                           "; ".join(table.row_labels[i] for i in best) + ".")
    return table


def sweep_figure(table: Table, points: Sequence[Mapping], *, png=None, pdf=None) -> None:
    """Heatmap (two hparams) or score per grid point (otherwise) of the table's first column."""
    from scjepa.report.figures import _figure, save_figure

    means = np.array([c[0].mean if c[0].status == "ok" else math.nan for c in table.cells])
    sds = np.array([c[0].sd if c[0].status == "ok" and c[0].n > 1 else 0.0 for c in table.cells])
    keys = list(points[0]) if points else []
    metric_label = table.columns[0].header[-1].replace(" (chosen on)", "")
    if len(keys) == 2:
        a = list(dict.fromkeys(p[keys[0]] for p in points))
        b = list(dict.fromkeys(p[keys[1]] for p in points))
        grid = np.full((len(a), len(b)), math.nan)
        for v, p in zip(means, points):
            grid[a.index(p[keys[0]]), b.index(p[keys[1]])] = v
        fig = _figure(1.6 + 0.9 * len(b), 1.2 + 0.55 * len(a))
        ax = fig.add_subplot()
        im = ax.imshow(grid, cmap="viridis", aspect="auto")
        top = np.nanmax(grid) if np.isfinite(grid).any() else math.nan  # bold: ties at the shown precision, as the table
        mid = np.nanmean(grid) if np.isfinite(grid).any() else math.nan
        for i in range(len(a)):
            for j in range(len(b)):
                if not math.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=6,
                            color="black" if grid[i, j] >= mid else "white",
                            fontweight="bold" if round(grid[i, j], 3) == round(top, 3) else "normal")
        ax.set_xticks(range(len(b)), [_fmt(v) for v in b])
        ax.set_yticks(range(len(a)), [_fmt(v) for v in a])
        ax.set_xlabel(keys[1])
        ax.set_ylabel(keys[0])
        fig.colorbar(im, ax=ax, label=f"val {metric_label}")
    else:
        fig = _figure(max(3.0, 0.45 * len(means) + 1.5), 2.8)
        ax = fig.add_subplot()
        x = np.arange(len(means))
        ax.errorbar(x, means, yerr=sds, fmt="o-", ms=3, capsize=2)
        ax.set_xticks(x, table.row_labels, rotation=45, ha="right", fontsize=6)
        ax.set_ylabel(f"val {metric_label}")
    ax.set_title(table.name.replace("_", " "))
    save_figure(fig, png=png, pdf=pdf)


def sweep_report_rule(rule) -> Table:
    """Rule ``report_sweep``: input ``scores`` (the variants' records); params ``name``, ``points``, ``metric``,
    ``seeds``, ``dataset``, ``base``, ``description``, ``style``, ``dpi``; output md/csv/tex and the figure files."""
    p, out = rule.params, rule.output
    records = load_records(rule.input["scores"], missing_ok=False)
    table = sweep_table(p["name"], records, list(p["points"]), metric=p["metric"], seeds=list(p["seeds"]),
                        dataset=p["dataset"], base=p["base"], description=p.get("description", ""))
    from scjepa.report.figures import set_style

    write_table(table, md=out["md"], csv=out["csv"], tex=out["tex"])
    set_style(p.get("style"), p.get("dpi"))
    sweep_figure(table, list(p["points"]), png=out.get("png"), pdf=out.get("pdf"))
    return table


__all__ = ["sweep_table", "sweep_figure", "sweep_report_rule"]
