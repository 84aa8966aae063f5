"""Paper figures 2-4 (PNG + PDF), drawn on pyplot-free matplotlib ``Figure`` objects (Agg).

- :func:`fig2_integration`: scIB bio-conservation / batch-correction / total per method, one box
  (and its runs as points) per method; a method without results is labelled ``n/a``/``failed``.
- :func:`fig3_spatial`: the tissue (x/y) coloured by the true and by the predicted cell type of the
  best method, and a bar chart of macro-F1 per method (within-dataset kNN, fine-tune, transfer).
- :func:`fig4_training_dynamics`: each loss term and the val kNN macro-F1 against training steps,
  one line per method, from each model directory's ``curve.csv``.

PDFs and PNGs are written without creation dates, so the same inputs give the same bytes.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from scjepa.errors import InputError
from scjepa.io import atomic_path

log = logging.getLogger(__name__)

STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,  # TrueType: editable text in vector editors
    "svg.fonttype": "none",
}
_ACTIVE: dict = {**STYLE, "savefig.dpi": 300}


def set_style(overrides: Mapping | None = None, dpi: int | None = None) -> dict:
    """The style of the figures drawn next: the house :data:`STYLE`, then ``overrides``.

    ``overrides`` are matplotlib rcParams (the config's ``report.style``, e.g. ``{"font.size": 9}``);
    ``dpi`` is the PNG resolution (``report.dpi``). An unknown key or a bad value raises
    :class:`InputError` naming ``report.style.<key>``. Returns the active rcParams overrides.
    """
    import matplotlib

    active = {**STYLE, "savefig.dpi": 300 if dpi is None else int(dpi)}
    for key, value in (overrides or {}).items():
        validator = matplotlib.rcParams.validate.get(key)
        if validator is None:
            raise InputError(f"'{key}' is not a matplotlib rcParam", key=f"report.style.{key}")
        try:
            active[key] = validator(value)
        except (ValueError, TypeError) as exc:
            raise InputError(f"bad value {value!r}: {exc}", key=f"report.style.{key}") from None
    _ACTIVE.clear()
    _ACTIVE.update(active)
    return dict(active)


AGGREGATE_METRICS = (
    ("bio_conservation", "Bio conservation"),
    ("batch_correction", "Batch correction"),
    ("total", "Total"),
)


def _figure(w: float, h: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(w, h), layout="constrained")


def _method_colors(methods: Sequence[str]) -> dict[str, str]:
    """Each method's colour from the one palette (:mod:`scjepa.report.style`): the same in every figure."""
    from scjepa.report.style import method_colors

    return method_colors(methods)


def save_figure(fig, *, png=None, pdf=None, dpi: int | None = None) -> None:
    """Write the figure atomically as PNG and/or PDF (no timestamps in the metadata).

    ``dpi`` defaults to the active style's (:func:`set_style`).
    """
    import matplotlib

    from scjepa.report.style import text_overlaps

    dpi = _ACTIVE["savefig.dpi"] if dpi is None else dpi
    with matplotlib.rc_context(_ACTIVE):
        # every figure checks itself for text running into text; the count travels in the PNG (tEXt
        # "text_overlaps") so benchmarks/render_report.py can count the figures that need fixing
        overlaps = text_overlaps(fig)
        if overlaps:
            log.warning("%s: %d overlapping text pair(s), e.g. %s", png or pdf, len(overlaps), overlaps[:3])
        if png:
            with atomic_path(png) as tmp:
                fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None,
                                                                  "text_overlaps": str(len(overlaps))})
        if pdf:
            with atomic_path(pdf) as tmp:
                fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "ModDate": None, "Producer": None})


def _status_of(records: list[Mapping]) -> str:
    if not records:
        return "failed"
    if any(r["status"] == "n/a" for r in records):
        return "n/a"
    return "failed"


# --------------------------------------------------------------------------- Fig. 2


def fig2_integration(
    records: Iterable[Mapping],
    methods: Sequence[str],
    *,
    datasets: Sequence[str] | None = None,
    task: str = "integration",
    row_labels: Mapping[str, str] | None = None,
    png=None,
    pdf=None,
):
    """Boxplots of scIB aggregate scores over runs: columns = bio / batch / total, rows = datasets."""
    import matplotlib

    recs = [r for r in records if r["task"] == task]
    if datasets is None:
        datasets = sorted({r["dataset"] for r in recs})
    if not datasets:
        raise ValueError("no integration records and no datasets given")
    colors = _method_colors(methods)
    labels = [str((row_labels or {}).get(m, m)) for m in methods]
    with matplotlib.rc_context(_ACTIVE):
        fig = _figure(2.4 * len(AGGREGATE_METRICS) + 0.4, 2.3 * len(datasets) + 0.3)
        axes = fig.subplots(len(datasets), len(AGGREGATE_METRICS), squeeze=False)
        rng = np.random.default_rng(0)  # jitter only
        for i, ds in enumerate(datasets):
            for j, (metric, title) in enumerate(AGGREGATE_METRICS):
                ax = axes[i][j]
                for x, m in enumerate(methods):
                    mrecs = [r for r in recs if r["method"] == m and r["dataset"] == ds]
                    vals = [
                        float(r["metrics"][metric]) for r in mrecs if r["status"] == "ok" and metric in r["metrics"]
                    ]
                    if not vals:
                        ax.text(
                            x,
                            0.5,
                            _status_of(mrecs),
                            ha="center",
                            va="center",
                            rotation=90,
                            color="0.4",
                            transform=ax.get_xaxis_transform(),
                        )
                        continue
                    ax.boxplot(
                        [vals],
                        positions=[x],
                        widths=0.6,
                        patch_artist=True,
                        showfliers=False,
                        boxprops={"facecolor": colors[m], "alpha": 0.5},
                        medianprops={"color": "k"},
                    )
                    ax.scatter(
                        x + rng.uniform(-0.15, 0.15, len(vals)),
                        vals,
                        s=8,
                        color=colors[m],
                        zorder=3,
                        edgecolor="k",
                        linewidth=0.3,
                    )
                ax.set_xticks(range(len(methods)), labels, rotation=45, ha="right")
                ax.set_xlim(-0.6, len(methods) - 0.4)
                ax.set_title(title if len(datasets) == 1 else f"{ds}: {title}")
                if j == 0:
                    ax.set_ylabel("score" if len(datasets) == 1 else f"{ds}\nscore")
                ax.grid(axis="y", linewidth=0.3, alpha=0.5)
    save_figure(fig, png=png, pdf=pdf)
    return fig


# --------------------------------------------------------------------------- Fig. 3


def _type_colors(types: Sequence[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    types = sorted(set(types))
    if len(types) <= 10:
        cmap, n = colormaps["tab10"], 10
    elif len(types) <= 20:
        cmap, n = colormaps["tab20"], 20
    else:
        cmap, n = colormaps["gist_ncar"], len(types) + 1
    return {t: cmap(i / n if n > 20 else i) for i, t in enumerate(types)}


def fig3_spatial(
    records: Iterable[Mapping],
    predictions: Mapping[str, str | os.PathLike | pd.DataFrame],
    methods: Sequence[str],
    *,
    dataset: str,
    select_metric: str = "transfer_macro_f1",
    pred_column: str | None = None,
    finetune_task: str = "finetune",
    row_labels: Mapping[str, str] | None = None,
    na: Iterable = (),
    png=None,
    pdf=None,
):
    """Tissue coloured by true vs predicted type (best method by ``select_metric``) + F1 bars per method.

    ``records``: score records (task "spatial" for ``dataset``; fine-tune records of the dataset
    are added to the bars where present). ``predictions``: method -> predictions CSV (or
    DataFrame) written by :func:`scjepa.tasks.spatial.write_predictions`. ``pred_column``
    defaults to ``pred_transfer`` when ``select_metric`` is a transfer metric, else ``pred_knn``.
    ``na``: the (task, method, dataset) entries of the tables (``scjepa.report.tables``): a bar a method
    cannot have (PCA's fine-tuning) reads n/a, not failed.
    """
    import matplotlib

    from scjepa.tasks.spatial import read_predictions

    records = list(records)
    spatial = {
        r["method"]: r for r in records if r["task"] == "spatial" and r["dataset"] == dataset and r["status"] == "ok"
    }
    if pred_column is None:
        pred_column = "pred_transfer" if select_metric.startswith("transfer") else "pred_knn"

    def available(m):
        src = predictions.get(m)
        return isinstance(src, pd.DataFrame) or (src is not None and Path(src).exists())

    scored = [
        (spatial[m]["metrics"][select_metric], m)
        for m in methods
        if m in spatial and select_metric in spatial[m]["metrics"] and available(m)
    ]
    best = max(scored)[1] if scored else None
    labels = {m: str((row_labels or {}).get(m, m)) for m in methods}
    show = None
    if best is not None and best in predictions:
        df = predictions[best]
        df = df if isinstance(df, pd.DataFrame) else read_predictions(df)
        show = df[df[pred_column].astype(str) != ""] if pred_column in df else df.iloc[:0]
    has_xy = bool(show is not None and len(show) and show[["x", "y"]].notna().all(axis=1).any())
    # The tissue panels take the tissue's own shape (equal aspect, axes fitted to the data, no letterbox):
    # the figure's height follows the tissue's height/width ratio, within readable bounds.
    if has_xy:
        xy = show[["x", "y"]].dropna()
        dx, dy = float(np.ptp(xy["x"])) or 1.0, float(np.ptp(xy["y"])) or 1.0
        ratio = float(np.clip(dy / dx, 0.3, 1.6))
    else:
        ratio = 0.8
    panel_w = 3.0
    panel_h = panel_w * ratio
    n_types = len(set(show["cell_type"]) | set(show[pred_column])) if show is not None and len(show) else 0
    legend_rows = math.ceil(n_types / 3) if n_types else 0
    legend_h = 0.16 * legend_rows + 0.1 if legend_rows else 0.05
    fig_h = max(panel_h + legend_h + 0.75, 3.0)
    with matplotlib.rc_context(_ACTIVE):
        fig = _figure(2 * panel_w + 3.6, fig_h)
        gs = fig.add_gridspec(2, 3, width_ratios=[panel_w, panel_w, 3.3], height_ratios=[panel_h, legend_h])
        ax_true, ax_pred = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
        ax_leg, ax_bar = fig.add_subplot(gs[1, 0:2]), fig.add_subplot(gs[:, 2])
        ax_leg.set_axis_off()
        if show is not None:
            colors = _type_colors(list(show["cell_type"]) + list(show[pred_column]))
            size = float(np.clip(5000.0 / max(len(show), 1), 1.0, 12))  # cells still visible at 100 % zoom
            for ax, col, title in (
                (ax_true, "cell_type", "true cell type"),
                (ax_pred, pred_column, f"predicted ({labels[best]})"),
            ):
                if has_xy:
                    ax.scatter(
                        show["x"], show["y"], c=[colors[t] for t in show[col]], s=size, linewidths=0, rasterized=True
                    )
                    pad_x, pad_y = 0.02 * dx, 0.02 * dy
                    ax.set_xlim(float(xy["x"].min()) - pad_x, float(xy["x"].max()) + pad_x)
                    ax.set_ylim(float(xy["y"].min()) - pad_y, float(xy["y"].max()) + pad_y)
                    ax.set_aspect("equal", adjustable="box")  # the box shrinks to the tissue, not the data
                else:
                    ax.text(0.5, 0.5, "no x/y coordinates", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(title)
                ax.set_xticks([]), ax.set_yticks([])
                for side in ("top", "right", "bottom", "left"):
                    ax.spines[side].set_visible(True)
                    ax.spines[side].set_linewidth(0.4)
            acc = float((show["cell_type"] == show[pred_column]).mean()) if len(show) else math.nan
            ax_pred.set_xlabel(f"{'transfer' if pred_column == 'pred_transfer' else 'kNN'} accuracy {acc:.2f}")
            from matplotlib.lines import Line2D

            handles = [
                Line2D([], [], marker="o", linestyle="", color=colors[t], label=t, markersize=4) for t in sorted(colors)
            ]
            # its own row under the two tissue panels: the legend covers no cells
            ax_leg.legend(handles=handles, loc="upper center", ncol=min(3, len(handles)), frameon=False, fontsize=6,
                          handletextpad=0.2, columnspacing=1.0, borderaxespad=0)
        else:
            for ax in (ax_true, ax_pred):
                ax.text(0.5, 0.5, "no predictions", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([]), ax.set_yticks([])
        _spatial_bars(ax_bar, records, methods, labels, dataset, finetune_task, na=na)
    save_figure(fig, png=png, pdf=pdf)
    return fig


def _spatial_bars(ax, records, methods, labels, dataset, finetune_task, na=()) -> None:
    from scjepa.report.tables import _na_match

    groups = [
        ("spatial", "knn_macro_f1", "kNN (within)"),
        (finetune_task, "macro_f1", "fine-tune"),
        ("spatial", "transfer_macro_f1", "transfer"),
    ]
    present = [
        g
        for g in groups
        if any(r["task"] == g[0] and r["dataset"] == dataset and g[1] in r["metrics"] for r in records)
    ]
    present = present or groups[:1]
    width = 0.8 / len(present)
    from matplotlib import colormaps

    cmap = colormaps["Set2"]  # readouts, not methods: the x axis names the method
    for gi, (task, metric, name) in enumerate(present):
        ax.bar(math.nan, 0, width, color=cmap(gi), edgecolor="k", linewidth=0.3, label=name)  # legend entry
        for x, m in enumerate(methods):
            recs = [r for r in records if r["task"] == task and r["method"] == m and r["dataset"] == dataset]
            vals = [float(r["metrics"][metric]) for r in recs if r["status"] == "ok" and metric in r["metrics"]]
            pos = x - 0.4 + width * (gi + 0.5)
            if vals:
                sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                ax.bar(pos, float(np.mean(vals)), width, yerr=sd or None, color=cmap(gi), edgecolor="k",
                       linewidth=0.3, capsize=1.5, error_kw={"linewidth": 0.6})
            else:
                status = "n/a" if _na_match(na, task, m, dataset) else _status_of(recs)
                ax.text(pos, 0.02, status, rotation=90, ha="center", va="bottom", fontsize=6, color="0.4")
    ax.set_xticks(range(len(methods)), [labels[m] for m in methods], rotation=45, ha="right")
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("macro-F1")
    # above the axes, under nothing: the legend never covers a bar
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(present), borderaxespad=0.3,
              handlelength=1.2, columnspacing=0.8)
    ax.grid(axis="y", linewidth=0.3, alpha=0.5)


# --------------------------------------------------------------------------- Fig. 4


def _major_log_labels(axis) -> None:
    """Readable labels on a log axis (call after plotting): plain numbers at 1, 2 and 5 of each decade when the
    axis spans under two decades (one decade label alone does not tell a reader where 30 s is), the decades
    only when it spans more. matplotlib's default minor labels (3x10^-2, 6x10^0) run into each other and into
    the neighbouring axis's labels on a short axis."""
    import math as _m

    from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, LogLocator, NullFormatter

    lo, hi = sorted(axis.get_view_interval())
    axis.set_minor_formatter(NullFormatter())
    if lo > 0 and _m.log10(hi / lo) < 2:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        axis.set_major_formatter(LogFormatterSciNotation())


CURVE_FIXED = ("step", "epoch", "val_knn_macro_f1")


def read_curve(path: str | os.PathLike) -> pd.DataFrame:
    """A model's ``curve.csv`` (or a model directory holding one); blank cells are NaN."""
    path = Path(path)
    if path.is_dir():
        path = path / "curve.csv"
    if not path.exists():
        raise InputError("does not exist (training curve)", path=path)
    df = pd.read_csv(path)
    if "step" not in df.columns:
        raise InputError("has no 'step' column", path=path, column="step")
    return df


def fig4_training_dynamics(
    curves: Mapping[str, str | os.PathLike | pd.DataFrame],
    *,
    row_labels: Mapping[str, str] | None = None,
    png=None,
    pdf=None,
):
    """One panel per loss column (``loss`` first, then every term in order of appearance) and one
    for ``val_knn_macro_f1``; x = step; one line per method. A method whose curve is missing is
    named in the figure's footnote rather than silently left out."""
    import matplotlib

    methods = list(curves)
    colors = _method_colors(methods)
    data: dict[str, pd.DataFrame] = {}
    missing = []
    for m, src in curves.items():
        try:
            data[m] = src if isinstance(src, pd.DataFrame) else read_curve(src)
        except InputError as exc:
            log.warning("%s", exc)
            missing.append(m)
    terms: list[str] = []
    for df in data.values():
        for c in df.columns:
            if c not in CURVE_FIXED and c not in terms and pd.api.types.is_numeric_dtype(df[c]):
                terms.append(c)
    if "loss" in terms:
        terms.remove("loss")
        terms.insert(0, "loss")
    panels = terms + ["val_knn_macro_f1"]
    nrows = math.ceil(len(panels) / 4)
    ncols = math.ceil(len(panels) / nrows)
    with matplotlib.rc_context(_ACTIVE):
        fig = _figure(2.5 * ncols + 0.3, 2.1 * nrows + 0.4)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, col in zip(axes, panels):
            positive = True
            for m, df in data.items():
                if col not in df:
                    continue
                d = df[["step", col]].dropna()
                if d.empty:
                    continue
                positive &= bool((d[col] > 0).all())
                ax.plot(
                    d["step"],
                    d[col],
                    color=colors[m],
                    linewidth=1.0,
                    marker="o" if col == "val_knn_macro_f1" else None,
                    markersize=2.5,
                    label=str((row_labels or {}).get(m, m)),
                )
            if positive and col != "val_knn_macro_f1" and ax.lines:
                ax.set_yscale("log")
                _major_log_labels(ax.yaxis)
            ax.set_title("val kNN macro-F1" if col == "val_knn_macro_f1" else col)
            ax.set_xlabel("step")
            ax.grid(linewidth=0.3, alpha=0.5)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        handles, labels = [], []
        for ax in axes[: len(panels)]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), frameon=False)
        if missing:
            fig.suptitle("no training curve: " + ", ".join(missing), fontsize=7, color="0.4")
    save_figure(fig, png=png, pdf=pdf)
    return fig


def figure_rule(rule) -> None:
    """The ``figure_*`` rules' entry point (``scjepa.rule.run``): ``params.figure`` picks the figure.

    integration (Fig. 2): ``input.scores`` (integration records; missing files allowed), ``params.methods``
    (x order), optional ``params.datasets``. spatial (Fig. 3): ``input.scores`` (the dataset's spatial and
    fine-tune records), ``input.predictions`` aligned with ``params.methods``, ``params.dataset``, optional
    ``params.select_metric`` (the best method for the tissue panels; transfer macro-F1 by default).
    training_dynamics (Fig. 4): ``input.curves`` (model directories) aligned with ``params.methods``.
    Every figure: ``params.row_labels``, ``params.style`` (rcParams), ``params.dpi``; ``output.png``/``pdf``.
    """
    from scjepa.report.tables import load_records

    def as_list(x):
        return [x] if isinstance(x, str) else list(x or [])

    p, inp = rule.params, rule.input
    set_style(p.get("style"), p.get("dpi"))
    which, methods, labels = p["figure"], list(p["methods"]), p.get("row_labels")
    files = dict(png=rule.output.get("png"), pdf=rule.output.get("pdf"))
    if which == "integration":
        datasets = p.get("datasets")
        fig2_integration(load_records(as_list(inp["scores"])), methods, datasets=list(datasets) if datasets else None,
                         row_labels=labels, **files)
    elif which == "spatial":
        preds = as_list(inp.get("predictions"))
        if len(preds) != len(methods):
            raise ValueError(f"{len(preds)} predictions files for {len(methods)} methods; align them with params.methods")
        fig3_spatial(load_records(as_list(inp["scores"])), dict(zip(methods, preds)), methods, dataset=p["dataset"],
                     select_metric=p.get("select_metric") or "transfer_macro_f1", row_labels=labels,
                     na=list(p.get("na") or []), **files)
    elif which == "training_dynamics":
        curves = as_list(inp["curves"])
        if len(curves) != len(methods):
            raise ValueError(f"{len(curves)} curves for {len(methods)} methods; align them with params.methods")
        fig4_training_dynamics(dict(zip(methods, curves)), row_labels=labels, **files)
    else:
        raise ValueError(f"params.figure must be integration, spatial or training_dynamics, got {which!r}")
