"""What each method costs: pretraining and embedding time and memory, from the rules' benchmark files.

Snakemake writes one benchmark file per job (``benchmark:``; columns ``s`` = wall seconds, ``cpu_time`` = CPU
seconds, ``max_rss`` = peak resident memory in MB). A method pretrained on the corpus (torch families, PCA)
pays ``results/benchmarks/pretrain/<method>.tsv`` once and ``results/benchmarks/embed/<method>/<dataset>.tsv``
per dataset; a per-dataset method (scVI, Harmony, the controls) has no pretraining: it is fitted in its embed
job, so its embedding cost includes the fit.

GPU-seconds are wall seconds x GPUs, and only for a job that ran on CUDA. A benchmark file does not say where
the job ran, so the job's log decides: the rule log records ``CUDA_VISIBLE_DEVICES`` (set by the scheduler
for a job that was given GPUs, ``unset`` otherwise), and the devices it lists are the job's GPUs. A method
asking for no GPU, ``training.device: cpu``, or a log saying ``unset``: n/a (CPU). No log: unknown. A workstation that runs CUDA jobs without setting
``CUDA_VISIBLE_DEVICES`` reads as CPU here; set it (or run through a scheduler) to have GPU-seconds counted.

Embedding time is reported per 1,000 cells (wall seconds / cells x 1,000, averaged over the datasets the
method embedded), so datasets of different sizes compare.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from scjepa.io import write_text

NA = "n/a"
MISSING = "not measured"
UNKNOWN = "unknown"


@dataclass
class Bench:
    s: float
    cpu_s: float
    max_rss_mb: float


def read_benchmark(path: str | Path) -> Bench | None:
    """A Snakemake benchmark TSV (mean over its repeats); ``None`` when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    with open(path) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        return None

    def mean(key):
        vals = []
        for r in rows:
            try:
                vals.append(float(r.get(key, "nan")))
            except ValueError:  # Snakemake writes "-" where psutil could not measure
                pass
        vals = [v for v in vals if math.isfinite(v)]
        return math.fsum(vals) / len(vals) if vals else math.nan

    return Bench(mean("s"), mean("cpu_time"), mean("max_rss"))


_CVD = re.compile(r"CUDA_VISIBLE_DEVICES=(\S+)")


def gpus_used(log: str | Path | None, gpus: int, device: str) -> int | None:
    """How many GPUs a job ran on: 0 when it asked for none or the device is ``cpu``; else the number of devices
    in the ``CUDA_VISIBLE_DEVICES`` line of its log (``unset``: 0). ``None``: no log, unknown."""
    if gpus < 1 or str(device).lower() == "cpu":
        return 0
    if log is None or not Path(log).exists():
        return None
    m = _CVD.search(Path(log).read_text(errors="replace")[:20000])
    if m is None:
        return None
    value = m.group(1)
    if value in ("unset", "", "-1", "NoDevFiles"):
        return 0
    return len([d for d in value.split(",") if d.strip()])


def n_cells_h5ad(path: str | Path) -> int:
    """Number of cells of an .h5ad without reading its matrix (the obs index length)."""
    import h5py

    with h5py.File(path, "r") as f:
        obs = f["obs"]
        index = obs.attrs.get("_index", "_index")
        return int(obs[index].shape[0])


@dataclass
class CostRow:
    method: str
    label: str
    kind: str  # "pretrained" | "per dataset" | "control"
    pretrain: Bench | None
    pretrain_gpus: int | None  # GPUs the job ran on (None: unknown)
    gpus: int  # GPUs the method asks for
    embed: dict[str, Bench | None]  # dataset -> bench
    embed_gpus: dict[str, int | None]
    n_cells: dict[str, int]
    control: str | None = None

    @property
    def embed_s_per_1k(self) -> float:
        vals = [b.s / self.n_cells[d] * 1000 for d, b in self.embed.items() if b and self.n_cells.get(d)]
        return math.fsum(vals) / len(vals) if vals else math.nan

    @property
    def embed_peak_mb(self) -> float:
        vals = [b.max_rss_mb for b in self.embed.values() if b and math.isfinite(b.max_rss_mb)]
        return max(vals) if vals else math.nan

    @property
    def embed_total_s(self) -> float:
        vals = [b.s for b in self.embed.values() if b]
        return math.fsum(vals) if vals else math.nan

    def gpu_seconds(self) -> float | str:
        """Pretraining + embedding GPU-seconds; n/a when nothing ran on CUDA; unknown when a log is missing."""
        jobs = ([(self.pretrain, self.pretrain_gpus)] if self.pretrain else []) + [
            (b, self.embed_gpus.get(d)) for d, b in self.embed.items() if b]
        if not jobs:
            return MISSING
        if any(g is None for _, g in jobs) and not any(g for _, g in jobs):
            return UNKNOWN
        on = [b.s * g for b, g in jobs if g]
        return math.fsum(on) if on else NA

    @property
    def total_s(self) -> float:
        """Wall seconds to have every embedding: pretraining (once) + every embed job."""
        parts = [self.pretrain.s if self.pretrain else 0.0, self.embed_total_s if self.embed else 0.0]
        if not self.pretrain and math.isnan(self.embed_total_s):
            return math.nan
        return math.fsum(p for p in parts if math.isfinite(p))


def build_cost(methods: Sequence[Mapping]) -> list[CostRow]:
    """``methods``: one mapping per method: ``method``, ``label``, ``kind``, ``gpus``, ``device``, ``control``,
    ``pretrain`` (benchmark path or None) and ``pretrain_log``, ``embed``: {dataset: benchmark path},
    ``embed_logs``: {dataset: log}, ``n_cells``: {dataset: cells}."""
    rows = []
    for m in methods:
        gpus, device = int(m.get("gpus") or 0), str(m.get("device") or "auto")
        pre = read_benchmark(m["pretrain"]) if m.get("pretrain") else None
        embed = {d: read_benchmark(p) for d, p in (m.get("embed") or {}).items()}
        rows.append(CostRow(
            m["method"], str(m.get("label") or m["method"]), str(m["kind"]), pre,
            gpus_used(m.get("pretrain_log"), gpus, device) if pre else 0, gpus, embed,
            {d: gpus_used((m.get("embed_logs") or {}).get(d), gpus, device) for d in embed},
            {d: int(n) for d, n in (m.get("n_cells") or {}).items()}, m.get("control")))
    return rows


# --------------------------------------------------------------------------- table

COLUMNS = ("kind", "pretraining wall (s)", "pretraining CPU (s)", "GPU (s)", "pretraining peak memory (MB)",
           "embedding (s per 1,000 cells)", "embedding peak memory (MB)", "total wall (s)", "datasets embedded")


def _num(v: float, digits: int = 1) -> str:
    return MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


def cost_cells(r: CostRow) -> list[str]:
    if r.kind == "pretrained":
        pre = [_num(r.pretrain.s), _num(r.pretrain.cpu_s), None, _num(r.pretrain.max_rss_mb, 0)] if r.pretrain \
            else [MISSING, MISSING, None, MISSING]
    else:  # fitted in its embed job
        pre = ["— (fitted per dataset)", "—", None, "—"]
    gpu = r.gpu_seconds()
    pre[2] = gpu if isinstance(gpu, str) else _num(gpu)
    measured = sum(1 for b in r.embed.values() if b)
    return [r.kind] + pre + [_num(r.embed_s_per_1k, 2), _num(r.embed_peak_mb, 0), _num(r.total_s),
                             f"{measured}/{len(r.embed)}"]


def _label(r: CostRow) -> str:
    from scjepa.report.tables import CONTROL_MARK

    return r.label + (f" ({CONTROL_MARK.get(r.control, 'control')})" if r.control else "")


NOTES = ("Wall and CPU seconds and peak resident memory (max_rss) from each job's Snakemake benchmark file. "
         "Per-dataset methods and controls have no pretraining: they are fitted in their embedding jobs, whose "
         "time is in the embedding column. GPU (s): wall seconds x GPUs of the jobs that ran on CUDA (from "
         "CUDA_VISIBLE_DEVICES in the job's log); n/a: every job ran on the CPU. Embedding time per 1,000 cells "
         "averaged over the datasets embedded; total wall: pretraining + every embedding job. 'not measured': "
         "no benchmark file (a run from before the rule had one).")


def cost_markdown(rows: Sequence[CostRow], caption: str = "") -> str:
    head = ["method", *COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---", ":---"] + ["---:"] * (len(head) - 2)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join([_label(r)] + cost_cells(r)) + " |")
    out = [f"**table_cost.** {caption}\n"] if caption else []
    return "\n".join(out + ["\n".join(lines), "", NOTES]) + "\n"


def cost_csv(rows: Sequence[CostRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", *COLUMNS])
    for r in rows:
        w.writerow([_label(r)] + cost_cells(r))
    return buf.getvalue()


def cost_latex(rows: Sequence[CostRow], caption: str = "") -> str:
    from scjepa.report.tables import _tex

    lines = ["% requires \\usepackage{booktabs}", "\\begin{table}[ht]", "\\centering", "\\small"]
    if caption:
        lines.append(f"\\caption{{{_tex(caption)}}}")
    lines += ["\\label{tab:table_cost}", "\\begin{tabular}{ll" + "r" * (len(COLUMNS) - 1) + "}", "\\toprule",
              " & ".join(_tex(h) for h in ["method", *COLUMNS]) + " \\\\", "\\midrule"]
    lines += [" & ".join(_tex(c) for c in [_label(r)] + cost_cells(r)) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}", f"\\par\\smallskip{{\\footnotesize {_tex(NOTES)}}}", "\\end{table}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figure


def annotation_score(records: Sequence[Mapping], method: str, metric: str = "knn_macro_f1") -> float:
    """Mean zero-shot kNN macro-F1 over the annotation datasets (one metric, one scale: averaging is fair)."""
    vals = [float(r["metrics"][metric]) for r in records
            if r.get("task") == "zero_shot" and r["method"] == method and r.get("status") == "ok"
            and metric in (r.get("metrics") or {})]
    return math.fsum(vals) / len(vals) if vals else math.nan


def fig_cost(rows: Sequence[CostRow], records: Sequence[Mapping], *, png=None, pdf=None):
    """Left: wall time per method (pretraining + embedding, stacked; log scale). Right: zero-shot annotation
    (mean kNN macro-F1) against the total wall time, one point per method."""
    import matplotlib

    from scjepa.report.figures import _ACTIVE, _figure, _major_log_labels, save_figure
    from scjepa.report.style import method_colors

    colors = method_colors([r.method for r in rows], {r.method: r.control for r in rows if r.control})
    with matplotlib.rc_context(_ACTIVE):
        fig = _figure(7.6, 1.1 + 0.24 * max(len(rows), 4))
        ax_bar, ax_sc = fig.subplots(1, 2, width_ratios=[1.1, 1])
        y = list(range(len(rows)))
        for i, r in enumerate(rows):
            pre = r.pretrain.s if r.pretrain else 0.0
            emb = r.embed_total_s if math.isfinite(r.embed_total_s) else 0.0
            if pre + emb <= 0:
                ax_bar.text(0.02, i, MISSING, transform=ax_bar.get_yaxis_transform(), va="center", fontsize=6,
                            color="0.4")
                continue
            if pre:
                ax_bar.barh(i, pre, color=colors[r.method], edgecolor="k", linewidth=0.3,
                            label="pretraining" if i == 0 else None)
            if emb:
                ax_bar.barh(i, emb, left=pre, color=colors[r.method], alpha=0.45, edgecolor="k", linewidth=0.3,
                            hatch="///")
        ax_bar.set_yticks(y, [_label(r) for r in rows])
        ax_bar.invert_yaxis()
        ax_bar.set_xscale("log")
        ax_bar.set_xlabel("wall time (s, log)")
        ax_bar.set_title("wall time per method\nsolid: pretraining, hatched: embedding")
        ax_bar.grid(axis="x", linewidth=0.3, alpha=0.5)
        _major_log_labels(ax_bar.xaxis)
        pts = []
        for r in rows:
            score = annotation_score(records, r.method)
            if math.isfinite(score) and math.isfinite(r.total_s) and r.total_s > 0:
                pts.append((r, r.total_s, score))
        for r, xv, yv in pts:
            ax_sc.scatter(xv, yv, s=28, color=colors[r.method], edgecolor="k", linewidth=0.4, zorder=3,
                          marker="s" if r.control else "o", label=_label(r))
        if pts:
            ax_sc.set_xscale("log")
            _major_log_labels(ax_sc.xaxis)
            ax_sc.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=6,
                         handletextpad=0.3, borderaxespad=0)
        else:
            ax_sc.text(0.5, 0.5, "no zero-shot records with a measured cost", ha="center", va="center",
                       transform=ax_sc.transAxes, fontsize=7, color="0.4")
        ax_sc.set_xlabel("total wall time (s, log)")
        ax_sc.set_ylabel("zero-shot kNN macro-F1\n(mean over annotation datasets)")
        ax_sc.set_title("annotation vs cost")
        ax_sc.grid(linewidth=0.3, alpha=0.5)
    save_figure(fig, png=png, pdf=pdf)
    return fig


# --------------------------------------------------------------------------- rule entry point


def cost_rule(rule) -> list[CostRow]:
    """The ``report_cost`` rule's entry point (``scjepa.rule.run``).

    ``input.processed`` aligned with ``params.datasets`` (cell counts); ``input.scores`` (zero-shot records for
    the scatter; every score record, so the rule runs after every job it measures); ``params.methods``: the
    mappings :func:`build_cost` takes, without ``n_cells``. Outputs ``md``, ``csv``, ``tex``, ``png``, ``pdf``.
    """
    from scjepa.report.figures import set_style
    from scjepa.report.tables import load_records

    def as_list(x):
        return [x] if isinstance(x, str) else list(x or [])

    cells = {d: n_cells_h5ad(p) for d, p in zip(rule.params["datasets"], as_list(rule.input["processed"]))}
    specs = [{**m, "n_cells": {d: cells[d] for d in (m.get("embed") or {}) if d in cells}}
             for m in rule.params["methods"]]
    rows = build_cost(specs)
    records = [r for r in load_records(as_list(rule.input.get("scores"))) if r.get("task") == "zero_shot"]
    caption = rule.params.get("caption") or "What each method costs to train and to apply."
    out = rule.output
    if out.get("md"):
        write_text(cost_markdown(rows, caption), out["md"])
    if out.get("csv"):
        write_text(cost_csv(rows), out["csv"])
    if out.get("tex"):
        write_text(cost_latex(rows, caption), out["tex"])
    if out.get("png") or out.get("pdf"):
        set_style(rule.params.get("style"), rule.params.get("dpi"))
        fig_cost(rows, records, png=out.get("png"), pdf=out.get("pdf"))
    return rows
