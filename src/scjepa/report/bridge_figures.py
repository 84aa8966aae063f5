"""Bridge figure: each method's latent with its snapshots and sampled Schrödinger-bridge paths.

One panel per method. The panel's axes are the first two principal components of that method's
own latent (fitted on the stored snapshot cells; every latent has its own geometry, so axes are
not comparable across panels). Cells are coloured by time (shared colour bar); paths are chained
Brownian-bridge samples from the first to the last snapshot (``scjepa.tasks.bridge.sampling.sample_paths``),
drawn as thin lines. A perturbation dataset's samples (``kind == "perturbation"``) colour cells
by condition (legend) and draw control → perturbed paths.

Input: the ``*.samples.npz`` files of ``workflow/scripts/score_bridge.py``. A file of a job that
did not produce a bridge (``status`` n/a or failed) or a missing file gives a labelled empty panel.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from scjepa.report import figures as _figures
from scjepa.report.figures import save_figure

log = logging.getLogger(__name__)


def _load(path) -> dict | str:
    """The samples as a dict of arrays, or a status string ("missing", "n/a", "failed")."""
    path = Path(path)
    if not path.exists():
        return "missing"
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as exc:  # a damaged file must not take the other panels down
        log.warning("cannot read %s: %s", path, exc)
        return "unreadable"
    status = str(d.get("status", "ok"))
    if status != "ok" or "points" not in d:
        return status if status != "ok" else "empty"
    return d


def _pca2(points: np.ndarray):
    """(mean, components (2, d), explained fractions (2,)) of the points; d < 2 is padded."""
    X = np.asarray(points, np.float64)
    mu = X.mean(axis=0)
    Xc = X - mu
    _, sv, vt = np.linalg.svd(Xc, full_matrices=False)
    var = sv**2
    frac = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    comps = np.zeros((2, X.shape[1]))
    k = min(2, vt.shape[0])
    comps[:k] = vt[:k]
    fr = np.zeros(2)
    fr[:k] = frac[:k]
    return mu, comps, fr


def plot_bridge_paths(samples_files: Mapping[str, str | os.PathLike], out_png=None, out_pdf=None, *,
                      title: str | None = None, max_paths: int = 60):
    """Draw one panel per method (``{label: samples .npz path}``, in order); write PNG and/or PDF.

    Returns the matplotlib Figure.
    """
    import matplotlib
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    items = list(samples_files.items())
    if not items:
        raise ValueError("plot_bridge_paths needs at least one samples file")
    loaded = [(label, _load(p)) for label, p in items]
    good = [d for _, d in loaded if isinstance(d, dict)]
    kind = str(good[0].get("kind", "timecourse")) if good else "timecourse"
    categorical = kind == "perturbation"
    n = len(loaded)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    with matplotlib.rc_context(_figures._ACTIVE):  # the style set by figures.set_style
        fig = Figure(figsize=(2.5 * ncols + 0.9, 2.35 * nrows + (0.3 if title else 0)), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        if good:
            tmin = min(float(np.min(d["point_time"])) for d in good)
            tmax = max(float(np.max(d["point_time"])) for d in good)
        else:
            tmin, tmax = 0.0, 1.0
        norm = Normalize(vmin=tmin, vmax=tmax if tmax > tmin else tmin + 1.0)
        cmap = colormaps["viridis"]
        cat_cmap = colormaps["tab10"]
        group_names = [str(g) for g in good[0]["group_names"]] if categorical and "group_names" in good[0] else []
        for ax, (label, d) in zip(axes, loaded):
            ax.set_title(label)
            if not isinstance(d, dict):
                ax.text(0.5, 0.5, d, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="0.4")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            mu, comps, frac = _pca2(d["points"])
            P = (d["points"] - mu) @ comps.T
            t = np.asarray(d["point_time"], np.float64)
            order = np.argsort(t, kind="stable")  # later cells on top
            if categorical:
                colors = [cat_cmap(int(g) % 10) for g in t[order]]
                ax.scatter(P[order, 0], P[order, 1], c=colors, s=3, alpha=0.55, linewidths=0, rasterized=True)
            else:
                ax.scatter(P[order, 0], P[order, 1], c=t[order], cmap=cmap, norm=norm, s=3, alpha=0.55,
                           linewidths=0, rasterized=True)
            paths = np.asarray(d.get("paths", np.zeros((0, 0, P.shape[1]))))
            if paths.ndim == 3 and paths.shape[0] > 0:
                proj = (paths[:max_paths] - mu) @ comps.T
                ax.add_collection(LineCollection(list(proj), colors="0.1", linewidths=0.45, alpha=0.45, zorder=3))
                ax.scatter(proj[:, 0, 0], proj[:, 0, 1], s=5, c="white", edgecolors="0.1", linewidths=0.4, zorder=4)
                ax.scatter(proj[:, -1, 0], proj[:, -1, 1], s=5, c="0.1", linewidths=0, zorder=4)
            sig = d.get("sigma")
            if sig is not None and np.ndim(sig) == 0:
                ax.text(0.02, 0.98, f"noise σ = {float(sig):g} × latent spread", transform=ax.transAxes, ha="left", va="top", fontsize=6.5,
                        color="0.25")
            ax.set_xlabel(f"latent PC 1 ({100 * frac[0]:.0f}%)")
            ax.set_ylabel(f"latent PC 2 ({100 * frac[1]:.0f}%)")
            ax.tick_params(length=2)
        for ax in axes[n:]:
            ax.set_visible(False)
        if categorical:
            from matplotlib.lines import Line2D

            handles = [Line2D([], [], marker="o", ls="", color=cat_cmap(i % 10), markersize=4, label=g)
                       for i, g in enumerate(group_names)]
            handles.append(Line2D([], [], color="0.1", lw=0.8, label="bridge path"))
            fig.legend(handles=handles, loc="outside right center", frameon=False, title="condition")
        else:
            from matplotlib.cm import ScalarMappable

            sm = ScalarMappable(norm=norm, cmap=cmap)
            cb = fig.colorbar(sm, ax=list(axes[:n]), shrink=0.85, aspect=30, pad=0.02)
            cb.set_label("time")
            if good and "times" in good[0]:
                ticks = np.asarray(good[0]["times"], np.float64)
                if ticks.size <= 12:
                    cb.set_ticks(ticks)
                    cb.set_ticklabels([f"{v:g}" for v in ticks])
        if title:
            fig.suptitle(title)
    if out_png or out_pdf:
        save_figure(fig, png=out_png, pdf=out_pdf)
    return fig


_COLORS = {"truth": "0.15", "bridge": "#d95f02", "baseline": "#1b9e77"}
_BASELINE_LABELS = {"prev": "previous snapshot", "next": "next snapshot", "random": "random coupling",
                    "exact_ot": "exact OT (σ = 0)"}


def plot_bridge_heldout(samples_files: Mapping[str, str | os.PathLike], out_png=None, out_pdf=None, *,
                        title: str | None = None, max_times: int = 3):
    """Fig. 5: per method (rows) and held-out time (columns), in the shared reference space (first two
    expression PCs, the same axes in every panel): the held-out snapshot, the bridge's samples (noise
    carried) and the prediction of the best baseline at that time (lowest mean W1 of previous / next
    snapshot, random coupling, exact OT), with both W1s. Grey: every snapshot's cells, for context.

    A samples file without held-out arrays (n/a, failed, missing, an old file) gives a labelled empty row.
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    items = list(samples_files.items())
    if not items:
        raise ValueError("plot_bridge_heldout needs at least one samples file")
    loaded = []
    for label, p in items:
        d = _load(p)
        if isinstance(d, dict) and "heldout_truth" not in d:
            d = "no held-out samples"
        loaded.append((label, d))
    good = [d for _, d in loaded if isinstance(d, dict)]
    times = np.asarray(good[0]["heldout_times"], np.float64) if good else np.zeros(1)
    if times.size > max_times:
        times = times[np.unique(np.linspace(0, times.size - 1, max_times).round().astype(int))]
    ncols, nrows = max(1, times.size), len(loaded)
    with matplotlib.rc_context(_figures._ACTIVE):
        fig = Figure(figsize=(2.3 * ncols + 0.4, 2.05 * nrows + 0.6 + (0.3 if title else 0)), layout="constrained")
        axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True))
        for r, (label, d) in enumerate(loaded):
            for ci, tval in enumerate(times):
                ax = axes[r, ci]
                ax.tick_params(length=2)
                if r == 0:
                    ax.set_title(f"held-out time {tval:g}")
                if ci == 0:
                    ax.set_ylabel(f"{label}\nref PC 2")
                if r == nrows - 1:
                    ax.set_xlabel("ref PC 1")
                if not isinstance(d, dict):
                    ax.text(0.5, 0.5, d, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.4")
                    continue
                ref = np.asarray(d["ref_points"])
                ax.scatter(ref[:, 0], ref[:, 1 % ref.shape[1]], s=1.5, c="0.85", linewidths=0, rasterized=True)
                hk = list(np.asarray(d["heldout_times"], np.float64))
                if tval not in hk:
                    continue
                i = hk.index(tval)
                for name in ("baseline", "bridge", "truth"):
                    pts = np.asarray(d[f"heldout_{name}"])[np.asarray(d[f"heldout_{name}_time"]) == tval]
                    ax.scatter(pts[:, 0], pts[:, 1 % pts.shape[1]], s=2.5, c=_COLORS[name], alpha=0.6,
                               linewidths=0, rasterized=True, zorder=3 if name == "truth" else 2)
                base = str(np.asarray(d["heldout_baseline_name"])[i])
                wb, wbase = np.asarray(d["heldout_w1"])[i]
                sig = float(np.asarray(d["heldout_sigma"])[i])
                ax.text(0.02, 0.98, f"W1 bridge {wb:.3g} (σ = {sig:g} × latent spread)\n{_BASELINE_LABELS.get(base, base)} {wbase:.3g}",
                        transform=ax.transAxes, ha="left", va="top", fontsize=6, color="0.2")
        handles = [Line2D([], [], marker="o", ls="", color=_COLORS["truth"], markersize=4, label="held-out cells"),
                   Line2D([], [], marker="o", ls="", color=_COLORS["bridge"], markersize=4, label="bridge samples"),
                   Line2D([], [], marker="o", ls="", color=_COLORS["baseline"], markersize=4,
                          label="best baseline's prediction"),
                   Line2D([], [], marker="o", ls="", color="0.8", markersize=4, label="all snapshots")]
        fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)
        if title:
            fig.suptitle(title)
    if out_png or out_pdf:
        save_figure(fig, png=out_png, pdf=out_pdf)
    return fig


def bridge_figure_rule(rule) -> None:
    """Rule ``figure_bridge``: Fig. 5 from the samples of ``input.samples`` (aligned with ``params.methods``):
    held-out snapshots in the shared reference space for time courses, control -> perturbed paths for
    perturbation screens."""
    import numpy as np

    from scjepa.report.figures import set_style

    set_style(rule.params.get("style"), rule.params.get("dpi"))
    samples = rule.input["samples"]
    samples = [samples] if isinstance(samples, str) else list(samples)
    labels = rule.params.get("row_labels") or {}
    files = {labels.get(m, m): p for m, p in zip(rule.params["methods"], samples)}
    kinds = set()
    for p in samples:
        try:
            with np.load(p, allow_pickle=False) as z:
                kinds.add(str(z["kind"]) if "kind" in z.files else "timecourse")
        except Exception:  # a missing or failed method's samples: drawn as such by the plot
            pass
    plot = plot_bridge_paths if kinds == {"perturbation"} else plot_bridge_heldout
    plot(files, rule.output["png"], rule.output["pdf"])
