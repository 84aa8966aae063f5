"""Is the default run trained to a plateau? Train every pretrained method FACTOR x longer and compare test scores.

Issue 16's criterion: training 3x longer must change no method's test kNN macro-F1 (zero-shot, every
in- and out-of-distribution dataset) by more than 0.01.

Takes a finished default run's working directory (``benchmarks/bench_default_run.py --workdir DIR``), copies
its zero-shot records and training curves aside, then reruns the workflow in the same directory with
``training.max_epochs`` (and every method's own ``max_epochs`` hparam, e.g. scVI's) multiplied by FACTOR, asking
only for the zero-shot records of the methods that train. A torch method's pretraining resumes from the
checkpoint the first run kept (``max_epochs`` is a resumable change; StepLR decays per epoch, so E epochs
then 2E more are the same run as 3E from scratch). PCA and the controls do not train and are not rerun.

    python benchmarks/bench_plateau.py --workdir DIR [--factor 3] [--cores 2] [--configfile config/config.yaml]

Writes ``benchmarks/results/plateau_<label>.json`` (per method and dataset: score at E and at FACTOR x E,
the change, the val kNN curve of each method over both runs) and its figure ``plateau_<label>.png`` (per method:
the val kNN curve over FACTOR x E epochs with the budget E marked, and the test scores at E and FACTOR x E), and
prints a Markdown table. ``--plot JSON`` redraws the figure of a written result.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
TORCH_FAMILIES = ("scjepa", "mae", "barlow_twins", "supervised")
METRIC = "knn_macro_f1"


def _scores(workdir: Path, methods, datasets) -> dict:
    out = {}
    for m in methods:
        for d in datasets:
            p = workdir / "results" / "scores" / "zero_shot" / m / f"{d}.json"
            if p.exists():
                rec = json.loads(p.read_text())
                out[f"{m}/{d}"] = rec["metrics"].get(METRIC) if rec["status"] == "ok" else None
    return out


def _curve(workdir: Path, method: str) -> list[dict]:
    p = workdir / "results" / "models" / method / "curve.csv"
    if not p.exists():
        return []
    rows = list(csv.DictReader(p.open()))
    return [{"step": int(r["step"]), "epoch": int(r["epoch"]),
             "val_knn_macro_f1": float(r["val_knn_macro_f1"]) if r.get("val_knn_macro_f1") not in ("", None) else None}
            for r in rows]


def plot(result: dict, out: Path) -> Path:
    """The plateau figure: per trained method, its val kNN macro-F1 curve over the longer run, the default budget
    marked, and each test score at the budget and at FACTOR x the budget (from the records)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scjepa.report.style import method_colors

    methods = sorted(result["curves"])
    colors = method_colors(methods)
    fx, E = result["factor"], result["epochs"]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.4 * len(methods), 3.0), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], methods):
        longer = [r for r in result["curves"][m][f"x{fx}"] if r["val_knn_macro_f1"] is not None]
        first = [r for r in result["curves"][m]["x1"] if r["val_knn_macro_f1"] is not None]
        if longer:
            ax.plot([r["step"] for r in longer], [r["val_knn_macro_f1"] for r in longer], color=colors[m], lw=1.2,
                    label="val kNN (engine)")
        budget = max((r["step"] for r in first), default=None)
        if budget:
            ax.axvline(budget, color="0.4", ls="--", lw=0.8)
            ax.text(budget, 0.02, f" {E} epochs", transform=ax.get_xaxis_transform(), fontsize=7, color="0.3")
        for r in (r for r in result["rows"] if r["method"] == m):
            v1, v3 = r[f"{METRIC}_x1"], r[f"{METRIC}_x{fx}"]
            if v1 is not None and v3 is not None and longer and budget:
                ax.plot([budget, longer[-1]["step"]], [v1, v3], marker="o", ms=3, lw=0.8, ls=":",
                        label=f"test {r['dataset']}: {v1:.3f} → {v3:.3f}")
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6, loc="best", frameon=False)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("kNN macro-F1")
    fig.suptitle(f"Trained {fx}x longer: largest test change {result['largest_abs_change']:.3f} "
                 f"(criterion <= 0.01: {'holds' if result['holds'] else 'fails'})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, help="a finished default run")
    ap.add_argument("--plot", type=Path, help="only redraw the figure of this plateau_<label>.json")
    ap.add_argument("--factor", type=int, default=3)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--label", default="default")
    args = ap.parse_args(argv)
    if args.plot:
        print(plot(json.loads(args.plot.read_text()), args.plot.with_suffix(".png")))
        return 0
    if args.workdir is None:
        ap.error("--workdir is required (or --plot JSON)")

    from scjepa import config as cfg

    config = cfg.validate(yaml.safe_load(args.configfile.read_text()))
    trained = [m for m in config["methods"] if cfg.method_entry(config, m)["family"] in TORCH_FAMILIES]
    scorers = [m for m in config["methods"] if "zero_shot" in cfg.method_entry(config, m)["serves"]]
    datasets = sorted(d for d, e in config["datasets"].items()
                      if {"in_distribution", "out_of_distribution"} & set(e["roles"]))
    before = _scores(args.workdir, scorers, datasets)
    if not any(v is not None for v in before.values()):
        raise SystemExit(f"{args.workdir}: no zero-shot records; run benchmarks/bench_default_run.py first")
    curves_before = {m: _curve(args.workdir, m) for m in trained}
    keep = args.workdir / f"plateau_x1_{args.label}"
    if keep.exists():
        shutil.rmtree(keep)
    shutil.copytree(args.workdir / "results" / "scores" / "zero_shot", keep / "zero_shot")

    epochs = int(config["training"]["max_epochs"])
    override = {"training": {"max_epochs": epochs * args.factor}}
    override["method_params"] = {}
    for m in trained:
        hp = cfg.method_entry(config, m)["hparams"]
        if "max_epochs" in hp:
            override["method_params"][m] = {"hparams": {"max_epochs": int(hp["max_epochs"]) * args.factor}}
    over = args.workdir / f"plateau_x{args.factor}.yaml"
    over.write_text(yaml.safe_dump(override))
    targets = [f"results/scores/zero_shot/{m}/{d}.json" for m in trained for d in datasets]
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"), "-d", str(args.workdir),
           *targets, "--cores", str(args.cores), "--configfile", str(args.configfile), str(over)]
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        print(proc.stdout[-4000:])
        raise SystemExit("the longer run failed")
    after = _scores(args.workdir, trained, datasets)
    rows = []
    for key, v1 in sorted(before.items()):
        m = key.split("/")[0]
        if m not in trained:
            continue
        v3 = after.get(key)
        delta = None if v1 is None or v3 is None else v3 - v1
        rows.append({"method": m, "dataset": key.split("/")[1], f"{METRIC}_x1": v1,
                     f"{METRIC}_x{args.factor}": v3, "change": delta})
    worst = max((abs(r["change"]) for r in rows if r["change"] is not None), default=None)
    result = {
        "criterion": f"|change| of test {METRIC} <= 0.01 for every method and dataset",
        "epochs": epochs, "factor": args.factor, "largest_abs_change": worst,
        "holds": worst is not None and worst <= 0.01, "rows": rows,
        "curves": {m: {"x1": curves_before[m], f"x{args.factor}": _curve(args.workdir, m)} for m in trained},
        "wall_s_longer_run": round(wall, 1), "workdir": str(args.workdir), "configfile": str(args.configfile),
    }
    out = ROOT / "benchmarks" / "results" / f"plateau_{args.label}.json"
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"| method | dataset | kNN macro-F1 at {epochs} epochs | at {epochs * args.factor} | change |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        ch = "n/a" if r["change"] is None else f"{r['change']:+.3f}"
        print(f"| {r['method']} | {r['dataset']} | {fmt(r[f'{METRIC}_x1'])} | {fmt(r[f'{METRIC}_x{args.factor}'])} | {ch} |")
    print(f"\nlargest |change| = {worst}; criterion holds: {result['holds']}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
