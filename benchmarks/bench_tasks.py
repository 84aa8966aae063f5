"""Wall time of the evaluation tasks at 1k / 10k / 100k cells, and where it goes.

Data: a synthetic embedding of Gaussian blobs (64-d, 20 cell types, 4 batches; batch = a small
offset); reference/query 80/20 for kNN and the linear probe. Fine-tuning needs expression, so its
input is the blobs pushed through a random linear map into ``--genes`` genes (ReLU, dense
float32), trained for ``--epochs`` epochs with the task's defaults (batch 256, AdamW, MLP encoder
D -> 512 -> 512 -> 256 -> 256 -> 64, val scored every epoch). One-off costs of a process (imports,
torch's first allocations) are paid in a warm-up and reported apart.

Integration runs :func:`scjepa.tasks.integration.scib_scores` with scib-metrics' default metric set
as the task uses it (kBET per label on, isolated labels off) and the PCA of the expression as the
pre-integrated embedding, each size in a FRESH process, as every Snakemake job is: its time
includes jax/numba compilation, which the smallest size measures by running the same data twice.

Skipping: kNN, probe and fine-tuning sizes are skipped when the time extrapolated from the
previous size (linear in cells for the probe and fine-tuning, quadratic for exact kNN) exceeds
``--budget`` seconds. An integration size is run under a hard limit of ``--budget`` seconds plus
the measured compilation time and reported as exceeded if killed; after that, larger sizes are
skipped.

    python benchmarks/bench_tasks.py [--sizes 1000 10000 100000] [--genes 2000] [--epochs 2] [--budget 120]

Prints a markdown table and writes benchmarks/results/tasks.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_TYPES, N_BATCHES, DIM = 20, 4, 64
GROWTH = {"knn": 2.0, "linear_probe": 1.0, "finetune": 1.0}  # time ~ cells ** GROWTH (skip rule)


def blobs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_TYPES, n)
    b = rng.integers(0, N_BATCHES, n)
    centers = rng.normal(0, 3, (N_TYPES, DIM))
    offsets = rng.normal(0, 0.7, (N_BATCHES, DIM))
    emb = (centers[y] + offsets[b] + rng.normal(0, 1, (n, DIM))).astype(np.float32)
    return emb, np.array([f"type{i}" for i in y]), np.array([f"batch{i}" for i in b])


def expression(emb: np.ndarray, n_genes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    W = rng.normal(0, 1 / np.sqrt(DIM), (DIM, n_genes)).astype(np.float32)
    out = emb @ W
    np.maximum(out, 0, out=out)
    return out


# --------------------------------------------------------------------------- integration (child)


@contextlib.contextmanager
def timed_scib(timings: dict):
    """Time every scib-metrics metric function and the neighbour search inside scib_scores."""
    import scib_metrics

    import scjepa.tasks.integration as integ

    names = [
        "isolated_labels",
        "nmi_ari_cluster_labels_kmeans",
        "silhouette_label",
        "clisi_knn",
        "bras",
        "ilisi_knn",
        "kbet_per_label",
        "graph_connectivity",
        "pcr_comparison",
    ]
    originals = {n: getattr(scib_metrics, n) for n in names}
    orig_nn = integ.exact_neighbors

    def wrap(name, fn):
        def inner(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t

        return inner

    for n, f in originals.items():
        setattr(scib_metrics, n, wrap(n, f))
    integ.exact_neighbors = wrap("neighbors (exact kNN graph)", orig_nn)
    try:
        yield
    finally:
        for n, f in originals.items():
            setattr(scib_metrics, n, f)
        integ.exact_neighbors = orig_nn


def scib_child(n: int, genes: int, repeat: bool) -> dict:
    """One integration run at n cells in this (fresh) process; with ``repeat``, run it twice."""
    t0 = time.perf_counter()
    import scib_metrics  # noqa: F401  (jax, umap, pynndescent: what every integration job imports)

    from scjepa.tasks.integration import IntegrationConfig, pca_embedding, scib_scores

    import_s = time.perf_counter() - t0
    emb, y, batch = blobs(n)
    X = expression(emb, genes)
    t = time.perf_counter()
    X_pre = pca_embedding(X, 50)
    pca_s = time.perf_counter() - t
    del X
    out: dict = {"n_cells": n, "pca_seconds": pca_s}
    for run in ("first", "repeat") if repeat else ("first",):
        per: dict = {}
        t = time.perf_counter()
        with timed_scib(per):
            m = scib_scores(emb, X_pre, batch, y, IntegrationConfig(subsample=1.0))
        sec = time.perf_counter() - t
        per["rest (Benchmarker bookkeeping)"] = sec - sum(per.values())
        per = dict(sorted(per.items(), key=lambda kv: -kv[1]))
        if run == "first":
            out.update(seconds=sec + pca_s, metrics_seconds=sec, per_metric_seconds=per, total=m["total"])
        else:
            out.update(repeat_metrics_seconds=sec, repeat_per_metric_seconds=per)
    out["import_seconds"] = import_s
    out["process_seconds"] = time.perf_counter() - t0
    return out


def run_scib(n: int, args, limit: float) -> dict:
    cmd = [sys.executable, __file__, "--scib-child", str(n), "--genes", str(args.genes)]
    if n == min(args.sizes):
        cmd.append("--repeat")
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"skipped": f"exceeded: killed after {limit:.0f} s (budget + compilation)"}
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"skipped": f"failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_seconds_fresh_process"] = wall
    return res


# --------------------------------------------------------------------------- kNN, probe, fine-tuning


def warm_up(args) -> dict:
    """Pay the one-off costs of kNN, probe and fine-tuning (imports; torch's first allocations and
    kernel set-up for the full-size encoder) outside the timings, and report them."""
    from scjepa.models.mlp import Encoder
    from scjepa.tasks.finetune import FinetuneConfig, finetune
    from scjepa.knn import knn_predict, linear_probe_predict

    emb, y, _ = blobs(300, seed=9)
    t = time.perf_counter()
    knn_predict(emb[:200], y[:200], emb[200:])
    linear_probe_predict(emb[:200], y[:200], emb[200:])
    sk = time.perf_counter() - t
    splits = np.array(["train", "val", "test"])[np.arange(300) % 3]
    t = time.perf_counter()
    finetune(
        Encoder(args.genes), expression(emb, args.genes), y, splits, config=FinetuneConfig(max_epochs=1, device=args.device)
    )
    return {"knn_and_probe_300_cells": sk, "finetune_300_cells_1_epoch": time.perf_counter() - t}


def run_size(n: int, args, prev: dict) -> dict:
    import torch

    from scjepa.models.mlp import Encoder
    from scjepa.tasks.finetune import FinetuneConfig, finetune
    from scjepa.knn import knn_predict, linear_probe_predict, score_annotation

    out: dict = {"n_cells": n}
    emb, y, _ = blobs(n)
    ref = np.random.default_rng(1).random(n) < 0.8
    ids = np.array([f"c{i}" for i in range(n)])

    def skip_reason(task):
        p = prev.get(task)
        if p is None:
            return None
        if "seconds" not in p:
            return "skipped (the previous size was skipped)"
        predicted = p["seconds"] * (n / p["n_cells"]) ** GROWTH[task]
        if predicted > args.budget:
            return f"skipped (predicted {predicted:.0f} s > {args.budget:.0f} s budget)"
        return None

    if (why := skip_reason("knn")) is None:
        t = time.perf_counter()
        pred = knn_predict(emb[ref], y[ref], emb[~ref], k=5, ref_ids=ids[ref], query_ids=ids[~ref])
        sec = time.perf_counter() - t
        out["knn"] = {"seconds": sec, "n_cells": n, "macro_f1": score_annotation(y[~ref], pred)["macro_f1"]}
    else:
        out["knn"] = {"skipped": why}

    if (why := skip_reason("linear_probe")) is None:
        t = time.perf_counter()
        pred = linear_probe_predict(emb[ref], y[ref], emb[~ref])
        sec = time.perf_counter() - t
        out["linear_probe"] = {"seconds": sec, "n_cells": n, "macro_f1": score_annotation(y[~ref], pred)["macro_f1"]}
    else:
        out["linear_probe"] = {"skipped": why}

    if (why := skip_reason("finetune")) is None:
        X = expression(emb, args.genes)
        splits = np.random.default_rng(2).choice(np.array(["train", "val", "test"]), n, p=[0.7, 0.15, 0.15])
        torch.manual_seed(0)
        t = time.perf_counter()
        res = finetune(
            Encoder(args.genes), X, y, splits, seed=0, config=FinetuneConfig(max_epochs=args.epochs, device=args.device)
        )
        sec = time.perf_counter() - t
        train = res.metrics["train_seconds"]
        out["finetune"] = {
            "seconds": sec,
            "n_cells": n,
            "train_seconds (incl. val scoring each epoch)": train,
            "test_scoring_seconds": sec - train,
            "seconds_per_epoch": train / args.epochs,
            "train_cells_per_second": res.metrics["n_train"] * args.epochs / train,
            "test_macro_f1": res.metrics["macro_f1"],
        }
    else:
        out["finetune"] = {"skipped": why}
    return out


# --------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--budget", type=float, default=120.0, help="seconds; larger sizes are skipped (see above)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tasks.json"))
    ap.add_argument("--scib-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--repeat", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.scib_child:
        print(json.dumps(scib_child(args.scib_child, args.genes, args.repeat)))
        return {}

    import scib_metrics
    import sklearn
    import torch

    from scjepa.device import select_device

    args.sizes = sorted(args.sizes)
    first_calls = warm_up(args)
    rows, prev = [], {}
    for n in args.sizes:
        res = run_size(n, args, prev)
        for task in GROWTH:
            prev[task] = res[task] if "seconds" in res[task] else {"n_cells": n}
        rows.append(res)
        print(f"done kNN/probe/fine-tune at {n} cells", flush=True)
    compile_s = None
    for res in rows:
        n = res["n_cells"]
        if compile_s is None and n != args.sizes[0]:
            res["scib"] = {"skipped": "skipped (the smallest size did not finish)"}
            continue
        if rows.index(res) > 0 and "seconds" not in rows[rows.index(res) - 1]["scib"]:
            res["scib"] = {"skipped": "skipped (the previous size was skipped or exceeded)"}
            continue
        limit = args.budget + (compile_s or 0.0) + (600 if compile_s is None else 0)
        res["scib"] = run_scib(n, args, limit)
        if compile_s is None and "repeat_metrics_seconds" in res["scib"]:
            compile_s = max(res["scib"]["metrics_seconds"] - res["scib"]["repeat_metrics_seconds"], 0.0)
            res["scib"]["compile_seconds"] = compile_s
        print(f"done scib at {n} cells", flush=True)
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "torch_threads": torch.get_num_threads(),
            "device": select_device(args.device),
            "torch": torch.__version__,
            "sklearn": sklearn.__version__,
            "scib_metrics": scib_metrics.__version__,
        },
        "settings": vars(args),
        "first_call_seconds": first_calls,
        "results": rows,
    }
    from scjepa.io import write_json

    write_json(report, args.out)
    print_table(report)
    return report


def print_table(report: dict) -> None:
    s = report["settings"]
    tasks = [
        ("knn", "kNN (k=5, exact, 80/20)"),
        ("linear_probe", "linear probe"),
        ("finetune", f"fine-tune ({s['epochs']} epochs, {s['genes']} genes)"),
        ("scib", "scib-metrics, fresh process"),
    ]
    print("\n| task | " + " | ".join(f"{r['n_cells']:,} cells" for r in report["results"]) + " |")
    print("|---|" + "---:|" * len(report["results"]))
    for key, name in tasks:
        cells = []
        for r in report["results"]:
            v = r[key]
            if "seconds" in v:
                cells.append(f"{v.get('wall_seconds_fresh_process', v['seconds']):.1f} s")
            else:
                cells.append(v["skipped"])
        print(f"| {name} | " + " | ".join(cells) + " |")
    fc = report["first_call_seconds"]
    print(
        f"\nfirst call in a process (warm-up, not in the table): kNN + probe {fc['knn_and_probe_300_cells']:.1f} s, "
        f"fine-tune {fc['finetune_300_cells_1_epoch']:.1f} s (300 cells, 1 epoch)"
    )
    for r in report["results"]:
        f = r["finetune"]
        if "seconds_per_epoch" in f:
            print(
                f"fine-tune at {r['n_cells']:,}: {f['seconds_per_epoch']:.2f} s/epoch, "
                f"{f['train_cells_per_second']:.0f} train cells/s, test scoring {f['test_scoring_seconds']:.2f} s"
            )
        sc = r["scib"]
        if "per_metric_seconds" in sc:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in sc["per_metric_seconds"].items())
            print(
                f"scib at {r['n_cells']:,}: imports {sc['import_seconds']:.1f} s, PCA {sc['pca_seconds']:.1f} s, "
                f"metrics {sc['metrics_seconds']:.1f} s: {parts}"
            )
            if "compile_seconds" in sc:
                print(
                    f"  the same data again in that process: {sc['repeat_metrics_seconds']:.1f} s, "
                    f"so ~{sc['compile_seconds']:.0f} s of a first call is jax/numba compilation"
                )


if __name__ == "__main__":
    main()
