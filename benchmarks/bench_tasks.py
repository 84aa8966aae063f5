"""Wall time of the evaluation tasks at 1k / 10k / 100k cells, and where it goes.

Data: a synthetic embedding of Gaussian blobs (64-d, 20 cell types, 4 batches; batch = a small
offset), reference/query 80/20 for kNN and the linear probe. Fine-tuning needs expression, so its
input is the blobs pushed through a random linear map into ``--genes`` genes (ReLU, dense
float32), trained for ``--epochs`` epochs with the task's defaults (batch 256, AdamW, MLP
encoder D -> 512 -> 512 -> 256 -> 256 -> 64). Integration runs scib-metrics' full default set
(kBET per label included; isolated labels off, as in the task) on the embedding with the PCA of
the expression as the pre-integrated embedding, one run with ``subsample=1``; its time is split
per metric, plus the shared exact kNN graph, the PCA and the imports/compilation of the first call.

A size is skipped (and the table says so) when the time extrapolated from the previous size
(linear in cells for the probe and fine-tuning, quadratic for exact kNN and scib-metrics'
silhouette-based metrics) exceeds ``--budget`` seconds (default 120).

    python benchmarks/bench_tasks.py [--sizes 1000 10000 100000] [--genes 2000] [--epochs 2] [--budget 120]

Prints a markdown table and writes benchmarks/results/tasks.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

N_TYPES, N_BATCHES, DIM = 20, 4, 64
# how each task's time grows with the number of cells (for the skip rule)
GROWTH = {"knn": 2.0, "linear_probe": 1.0, "finetune": 1.0, "scib": 2.0}


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


@contextlib.contextmanager
def timed_scib(timings: dict):
    """Time every scib-metrics metric function and the neighbour search inside scib_scores."""
    import scib_metrics

    import scjepa.tasks.integration as integ

    names = ["isolated_labels", "nmi_ari_cluster_labels_kmeans", "silhouette_label", "clisi_knn", "bras",
             "ilisi_knn", "kbet_per_label", "graph_connectivity", "pcr_comparison"]  # fmt: skip
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


def run_size(n: int, args, prev: dict, compile_seconds: dict) -> dict:
    import torch

    from scjepa.tasks.finetune import FinetuneConfig, finetune
    from scjepa.tasks.integration import IntegrationConfig, pca_embedding, scib_scores
    from scjepa.tasks.knn import knn_predict, linear_probe_predict, score_annotation

    out: dict = {"n_cells": n}
    emb, y, batch = blobs(n)
    ref = np.random.default_rng(1).random(n) < 0.8
    ids = np.array([f"c{i}" for i in range(n)])

    def should_skip(task):
        if task not in prev:
            return None
        p = prev[task]
        if not isinstance(p.get("seconds"), float):
            return "skipped (the previous size was skipped)"
        fixed = compile_seconds.get(task, 0.0)  # one-off JIT cost per process, not size-dependent
        predicted = fixed + max(p["seconds"] - fixed, 0.0) * (n / p["n_cells"]) ** GROWTH[task]
        if predicted > args.budget:
            return f"skipped (predicted {predicted:.0f} s > {args.budget:.0f} s budget)"
        return None

    # kNN
    if (why := should_skip("knn")) is None:
        t = time.perf_counter()
        pred = knn_predict(emb[ref], y[ref], emb[~ref], k=5, ref_ids=ids[ref], query_ids=ids[~ref])
        sec = time.perf_counter() - t
        out["knn"] = {"seconds": sec, "n_cells": n, "macro_f1": score_annotation(y[~ref], pred)["macro_f1"]}
    else:
        out["knn"] = {"skipped": why}

    # linear probe
    if (why := should_skip("linear_probe")) is None:
        t = time.perf_counter()
        pred = linear_probe_predict(emb[ref], y[ref], emb[~ref])
        sec = time.perf_counter() - t
        out["linear_probe"] = {"seconds": sec, "n_cells": n, "macro_f1": score_annotation(y[~ref], pred)["macro_f1"]}
    else:
        out["linear_probe"] = {"skipped": why}

    # fine-tuning (a few epochs)
    if (why := should_skip("finetune")) is None:
        from scjepa.models.mlp import Encoder

        X = expression(emb, args.genes)
        rng = np.random.default_rng(2)
        splits = rng.choice(np.array(["train", "val", "test"]), n, p=[0.7, 0.15, 0.15])
        torch.manual_seed(0)
        t = time.perf_counter()
        res = finetune(Encoder(args.genes), X, y, splits, seed=0,
                       config=FinetuneConfig(epochs=args.epochs, device=args.device))  # fmt: skip
        sec = time.perf_counter() - t
        train = res.metrics["train_seconds"]
        out["finetune"] = {
            "seconds": sec,
            "n_cells": n,
            "n_genes": args.genes,
            "epochs": args.epochs,
            "train_seconds": train,
            "seconds_per_epoch": train / args.epochs,
            "train_cells_per_second": res.metrics["n_train"] * args.epochs / train,
            "test_macro_f1": res.metrics["macro_f1"],
        }
        del X
    else:
        out["finetune"] = {"skipped": why}

    # scib-metrics
    if (why := should_skip("scib")) is None:
        X = expression(emb, args.genes)
        t = time.perf_counter()
        X_pre = pca_embedding(X, 50)
        pca_s = time.perf_counter() - t
        del X
        per: dict = {}
        t = time.perf_counter()
        with timed_scib(per):
            m = scib_scores(emb, X_pre, batch, y, IntegrationConfig(subsample=1.0))
        sec = time.perf_counter() - t
        per["other (Benchmarker bookkeeping, jax/numba compilation outside metrics)"] = sec - sum(per.values())
        out["scib"] = {
            "seconds": sec + pca_s,
            "n_cells": n,
            "pca_seconds": pca_s,
            "per_metric_seconds": dict(sorted(per.items(), key=lambda kv: -kv[1])),
            "total": m["total"],
            "batch_correction": m["batch_correction"],
            "bio_conservation": m["bio_conservation"],
        }
        if "scib" not in compile_seconds:
            # Same shapes again: jax/numba reuse their compiled code, so the difference is compilation.
            warm: dict = {}
            t = time.perf_counter()
            with timed_scib(warm):
                scib_scores(emb, X_pre, batch, y, IntegrationConfig(subsample=1.0))
            warm_s = time.perf_counter() - t
            out["scib"]["warm_seconds"] = warm_s + pca_s
            out["scib"]["warm_per_metric_seconds"] = dict(sorted(warm.items(), key=lambda kv: -kv[1]))
            compile_seconds["scib"] = max(sec - warm_s, 0.0)
            out["scib"]["compile_seconds"] = compile_seconds["scib"]
    else:
        out["scib"] = {"skipped": why}
    return out


def warm_up(args) -> dict:
    """Pay the one-off costs of kNN, probe and fine-tuning (imports; torch's first allocations and
    kernel set-up for the full-size encoder) outside the timings, and report them."""
    from scjepa.models.mlp import Encoder
    from scjepa.tasks.finetune import FinetuneConfig, finetune
    from scjepa.tasks.knn import knn_predict, linear_probe_predict

    emb, y, _ = blobs(300, seed=9)
    t = time.perf_counter()
    knn_predict(emb[:200], y[:200], emb[200:])
    linear_probe_predict(emb[:200], y[:200], emb[200:])
    sk = time.perf_counter() - t
    splits = np.array(["train", "val", "test"])[np.arange(300) % 3]
    t = time.perf_counter()
    finetune(Encoder(args.genes), expression(emb, args.genes), y, splits, config=FinetuneConfig(epochs=1, device=args.device))
    return {"knn_probe_first_call_seconds_300_cells": sk, "finetune_first_call_seconds_300_cells_1_epoch": time.perf_counter() - t}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--budget", type=float, default=120.0, help="skip a size predicted to exceed this (s)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tasks.json"))
    args = ap.parse_args(argv)

    import sklearn
    import torch

    t = time.perf_counter()
    import scib_metrics  # jax, umap, pynndescent

    import_s = time.perf_counter() - t
    first_calls = warm_up(args)
    rows = []
    prev: dict = {}
    compile_seconds: dict = {}
    for n in sorted(args.sizes):
        res = run_size(n, args, prev, compile_seconds)
        rows.append(res)
        for task in GROWTH:
            if "seconds" in res[task]:
                prev[task] = res[task]
            elif task in prev:
                prev[task] = {"n_cells": n}
        print(f"done {n} cells", flush=True)
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "torch": torch.__version__,
            "sklearn": sklearn.__version__,
            "scib_metrics": scib_metrics.__version__,
        },
        "settings": vars(args),
        "import_seconds_scib": import_s,
        "first_call_seconds": first_calls,
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from scjepa.io import write_json

    write_json(report, out)
    print_table(report)
    return report


def print_table(report: dict) -> None:
    tasks = [("knn", "kNN (k=5, exact)"), ("linear_probe", "linear probe"),
             ("finetune", f"fine-tune ({report['settings']['epochs']} ep, {report['settings']['genes']} genes)"),
             ("scib", "scib-metrics (full set)")]  # fmt: skip
    sizes = [r["n_cells"] for r in report["results"]]
    print("\n| task | " + " | ".join(f"{n:,} cells" for n in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for key, name in tasks:
        cells = []
        for r in report["results"]:
            v = r[key]
            cells.append(f"{v['seconds']:.2f} s" if "seconds" in v else v["skipped"])
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nimport of scib-metrics/jax/umap: {report['import_seconds_scib']:.1f} s (once per process)")
    fc = report["first_call_seconds"]
    print(f"first call in a process (not in the table): kNN + probe {fc['knn_probe_first_call_seconds_300_cells']:.1f} s, "
          f"fine-tune {fc['finetune_first_call_seconds_300_cells_1_epoch']:.1f} s (300 cells, 1 epoch)")
    for r in report["results"]:
        if "per_metric_seconds" in r["scib"]:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in r["scib"]["per_metric_seconds"].items())
            print(f"scib at {r['n_cells']:,}: PCA {r['scib']['pca_seconds']:.1f} s; {parts}")
            if "warm_seconds" in r["scib"]:
                print(f"  same data again in the same process (compiled): {r['scib']['warm_seconds']:.1f} s, "
                      f"so ~{r['scib']['compile_seconds']:.0f} s of the first call is jax/numba compilation")
        if "seconds_per_epoch" in r["finetune"]:
            f = r["finetune"]
            print(f"fine-tune at {r['n_cells']:,}: {f['seconds_per_epoch']:.2f} s/epoch, "
                  f"{f['train_cells_per_second']:.0f} train cells/s")  # fmt: skip


if __name__ == "__main__":
    main()
