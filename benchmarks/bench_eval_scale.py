"""Paper-scale evaluation costs (issue 18, item 6): wall, CPU and peak RSS of each evaluation task.

Every (task, size) runs in a FRESH child process pinned to one BLAS/torch thread (the evaluation rules
declare ``threads: 1``); the parent reads the child's CPU time and peak RSS from ``wait4`` and the load
average before and after. Inside the child only the task's own library call is timed (wall and process CPU);
data generation is outside the timing but inside the peak RSS (the real job holds the same data).

Tasks, each the library code path its rule runs:

- ``zero_shot``: :func:`scjepa.tasks.knn.zero_shot` on an embedding AnnData (64-d Gaussian blobs,
  ``--types`` cell types, splits 70/15/15 as ``preprocess.split_fractions``): exact kNN (k = 5) from the
  train split to the test split, and the linear probe; the two timed apart.
- ``probe``: the linear probe alone (for sizes where exact kNN would take too long); ``probe_hard`` the same
  on overlapping classes (blob centres 10x closer), reporting lbfgs' iterations.
- ``finetune``: :func:`scjepa.tasks.finetune.finetune_dataset` (what ``score_finetune`` calls) on an
  in-memory CSR processed dataset of ``--genes`` genes and ~``--nnz`` non-zeros per cell, the paper's batch
  of 1,024, ``--epochs`` epochs; per-epoch time from the run's history.
- ``integration``: :func:`scjepa.tasks.integration.integration_run` (PCA of the CSR expression + the
  scib-metrics Benchmarker) on n cells (``subsample`` 1.0, no cap: the size of one run), ``--scib-runs`` runs
  in the process (the first pays jax tracing/compilation); a jax compilation cache shared by the children,
  as the workflow shares ``.snakemake/jax_cache``.
- ``spatial``: :func:`scjepa.tasks.spatial.spatial_scores`: within-tissue kNN + probe on n spatial cells
  and cross-platform kNN transfer from a reference of the same size to every spatial cell.

    python benchmarks/bench_eval_scale.py --run zero_shot:100000 zero_shot:300000 probe:1000000 ...

The series recorded in results/eval_scale.json (benchmarks/RESULTS.md, 'Paper-scale evaluation costs'):
``--run zero_shot:100000 finetune:30000 spatial:30000 integration:5000 integration:10000 zero_shot:300000
finetune:100000 spatial:100000 probe:1000000 integration:25000``, then ``probe_hard:100000 integration:10000
zero_shot:1000000``, then ``--scib-runs 1 --run finetune:100000 integration:50000`` (the second fine-tuning
row after the task stopped copying X's rows; the first integration rows ran one run per process).

Appends each result to ``--out`` (JSON list), so a long series can be resumed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM = 64
ONE_THREAD = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def blobs(n: int, n_types: int, seed: int = 0, n_batches: int = 4, spread: float = 3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_types, n)
    b = rng.integers(0, n_batches, n)
    centers = rng.normal(0, spread, (n_types, DIM)).astype(np.float32)
    offsets = rng.normal(0, 0.7, (n_batches, DIM)).astype(np.float32)
    emb = centers[y] + offsets[b] + rng.normal(0, 1, (n, DIM)).astype(np.float32)
    return emb, np.array([f"type{i}" for i in range(n_types)])[y], np.array([f"batch{i}" for i in range(n_batches)])[b]


def splits_of(n: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array(["train", "val", "test"]), n, p=[0.7, 0.15, 0.15])


def emb_adata(n: int, n_types: int, seed: int = 0, prefix: str = "c", spread: float = 3.0):
    import anndata as ad
    import pandas as pd

    emb, y, b = blobs(n, n_types, seed, spread=spread)
    obs = pd.DataFrame({"cell_type": pd.Categorical(y), "batch": pd.Categorical(b),
                        "split": pd.Categorical(splits_of(n, seed + 2))},
                       index=np.char.add(prefix, np.arange(n).astype(str)))
    a = ad.AnnData(obs=obs)
    a.obsm["X_emb"] = emb
    return a


def csr_expression(labels: np.ndarray, n_genes: int, nnz: int, seed: int = 1):
    """CSR log-normalised-like expression: each cell ~nnz genes, half of them its type's marker block."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n = len(labels)
    codes = np.unique(labels, return_inverse=True)[1]
    per = np.full(n, nnz, dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(per)])
    cols = rng.integers(0, n_genes, indptr[-1], dtype=np.int64)
    half = nnz // 2
    marker = (codes[:, None] * 97 + np.arange(half)[None, :]) % n_genes  # the type's block
    cols.reshape(n, nnz)[:, :half] = marker
    vals = rng.gamma(2.0, 0.6, indptr[-1]).astype(np.float32)
    X = sp.csr_matrix((vals, cols.astype(np.int32), indptr), shape=(n, n_genes))
    X.sum_duplicates()
    return X


# --------------------------------------------------------------------------- children


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (Linux >= 4.0: 5 > /proc/self/clear_refs), after the data is built,
    so the task's peak excludes the generator's temporaries (it still includes the data the task holds)."""
    import gc

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def task_peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None



def child(task: str, n: int, args) -> dict:
    out: dict = {"task": task, "n_cells": n}
    t_start = time.perf_counter()
    if task in ("zero_shot", "probe", "probe_hard"):
        import scjepa.tasks.knn as zs
        from scjepa.knn import linear_probe_predict

        a = emb_adata(n, args.types, spread=0.3 if task == "probe_hard" else 3.0)
        timings: dict = {}

        def timed(name, fn):
            def inner(*x, **k):
                w, c = time.perf_counter(), time.process_time()
                try:
                    return fn(*x, **k)
                finally:
                    timings[name] = {"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c}
            return inner

        if task in ("probe", "probe_hard"):
            ref = np.asarray(a.obs["split"] == "train")
            q = np.asarray(a.obs["split"] == "test")
            e, y = a.obsm["X_emb"], np.asarray(a.obs["cell_type"].astype(str))
            w, c = time.perf_counter(), time.process_time()
            import sklearn.linear_model as lm

            n_iter = {}
            orig_fit = lm.LogisticRegression.fit

            def fit(self, *x, **k):
                r = orig_fit(self, *x, **k)
                n_iter["n"] = int(np.max(self.n_iter_))
                return r

            lm.LogisticRegression.fit = fit
            linear_probe_predict(e[ref], y[ref], e[q], seed=0)
            out["lbfgs_iterations"] = n_iter.get("n")
            out.update(wall_s=time.perf_counter() - w, cpu_s=time.process_time() - c, n_ref=int(ref.sum()),
                       n_query=int(q.sum()))
        else:
            zs.knn_predict = timed("knn", zs.knn_predict)
            zs.linear_probe_predict = timed("probe", zs.linear_probe_predict)
            reset_peak_rss()
            w, c = time.perf_counter(), time.process_time()
            metrics, _ = zs.zero_shot(a, k=5, probe=True, seed=0)
            out.update(wall_s=time.perf_counter() - w, cpu_s=time.process_time() - c, parts=timings,
                       n_ref=int(metrics["n_ref"]), n_query=int(metrics["n_query"]),
                       knn_macro_f1=metrics["knn_macro_f1"])
    elif task == "finetune":
        import anndata as ad
        import torch

        from scjepa.models.mlp import Encoder
        from scjepa.tasks.finetune import FinetuneConfig, finetune_dataset

        torch.set_num_threads(1)
        a = emb_adata(n, args.types)
        X = csr_expression(np.asarray(a.obs["cell_type"].astype(str)), args.genes, args.nnz)
        genes = [f"g{i}" for i in range(args.genes)]
        adata = ad.AnnData(X=X, obs=a.obs[["cell_type", "split"]].copy())
        adata.var_names = genes
        del a
        torch.manual_seed(0)
        cfg = FinetuneConfig(max_epochs=args.epochs, batch_size=1024, device="cpu")
        reset_peak_rss()
        w, c = time.perf_counter(), time.process_time()
        res, _ = finetune_dataset(adata, None, init="random", encoder=Encoder(args.genes), genes=genes, seed=0,
                                  config=cfg)
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        out["task_peak_rss_mb"] = task_peak_rss_mb()
        train = res.metrics["train_seconds"]
        # what a GPU node's fine-tuning epoch cannot go below: the host-side batch assembly of this code path
        # (CSR fancy-index of the train rows + densify), measured alone over one epoch's batches
        from scjepa.tasks.finetune import _dense_rows

        tr = np.flatnonzero(np.asarray(adata.obs["split"] == "train"))
        order = np.random.default_rng(0).permutation(len(tr))
        w2, c2 = time.perf_counter(), time.process_time()
        for start in range(0, len(order), 1024):
            _dense_rows(X, tr[order[start:start + 1024]])
        out.update(host_batches_wall_s=time.perf_counter() - w2, host_batches_cpu_s=time.process_time() - c2)
        out.update(wall_s=wall, cpu_s=cpu, epochs=args.epochs, genes=args.genes, nnz_per_cell=int(X.nnz / n),
                   X_bytes=int(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes),
                   train_seconds=train, seconds_per_epoch=train / args.epochs, rest_seconds=wall - train,
                   n_train=int(res.metrics["n_train"]), macro_f1=res.metrics["macro_f1"])
    elif task == "integration":
        from scjepa.tasks.integration import IntegrationConfig, integration_run

        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        t = time.perf_counter()
        import scib_metrics  # noqa: F401
        import_s = time.perf_counter() - t
        a = emb_adata(n, args.scib_types)
        X = csr_expression(np.asarray(a.obs["cell_type"].astype(str)), args.genes, args.nnz)
        cfg = IntegrationConfig(subsample=1.0, max_cells=None)
        reset_peak_rss()
        per_run = []
        for seed in range(args.scib_runs):  # the job's runs share one process: the first pays compilation
            w, c = time.perf_counter(), time.process_time()
            metrics, _ = integration_run(a, X, seed=seed, config=cfg)
            per_run.append({"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c})
        out.update(wall_s=sum(r["wall_s"] for r in per_run), cpu_s=sum(r["cpu_s"] for r in per_run), runs=per_run,
                   import_s=import_s, total=metrics["total"], n_types=args.scib_types, genes=args.genes,
                   nnz_per_cell=args.nnz)
    elif task == "spatial":
        from scjepa.tasks.spatial import spatial_scores

        sp_a = emb_adata(n, args.spatial_types, seed=0, prefix="s")
        ref_a = emb_adata(n, args.spatial_types, seed=5, prefix="r")
        import scjepa.knn as knn_mod
        w, c = time.perf_counter(), time.process_time()
        reset_peak_rss()
        metrics, _, _ = spatial_scores(sp_a, ref_a, spatial_name="spatial", reference_name="ref", seed=0)
        out.update(wall_s=time.perf_counter() - w, cpu_s=time.process_time() - c, n_reference=n,
                   transfer_macro_f1=metrics["transfer_macro_f1"], n_types=args.spatial_types)
        del knn_mod
    else:
        raise SystemExit(f"unknown task {task}")
    import resource

    out["child_seconds"] = time.perf_counter() - t_start
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this process's peak
    out.setdefault("task_peak_rss_mb", task_peak_rss_mb())  # since the data was built (reset_peak_rss)
    return out


# --------------------------------------------------------------------------- parent


def run_child(task: str, n: int, args, limit: float) -> dict:
    cmd = [sys.executable, __file__, "--child", f"{task}:{n}", "--types", str(args.types),
           "--scib-types", str(args.scib_types), "--spatial-types", str(args.spatial_types),
           "--genes", str(args.genes), "--nnz", str(args.nnz), "--epochs", str(args.epochs),
           "--scib-runs", str(args.scib_runs)]
    env = {**os.environ, **ONE_THREAD,
           "JAX_COMPILATION_CACHE_DIR": args.jax_cache, "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
    load0 = os.getloadavg()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"task": task, "n_cells": n, "skipped": f"killed after {limit:.0f} s"}
    wall = time.perf_counter() - t
    res = {"task": task, "n_cells": n}
    if proc.returncode != 0:
        res["failed"] = stderr.strip().splitlines()[-3:]
        return res
    res.update(json.loads(stdout.strip().splitlines()[-1]))
    res["process_wall_s"] = wall
    res["load_before"], res["load_after"] = load0, os.getloadavg()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", nargs="*", default=[], help="task:n_cells ...")
    ap.add_argument("--types", type=int, default=164, help="cell types (scTab: 164)")
    ap.add_argument("--scib-types", type=int, default=40)
    ap.add_argument("--spatial-types", type=int, default=29)
    ap.add_argument("--genes", type=int, default=19331)
    ap.add_argument("--nnz", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--scib-runs", type=int, default=2)
    ap.add_argument("--limit", type=float, default=900.0)
    ap.add_argument("--jax-cache", default="/tmp/scjepa_bench_jax_cache")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval_scale.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        task, n = args.child.split(":")
        print(json.dumps(child(task, int(n), args)))
        return
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"runs": []}
    data["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
                       "threads": "1 (OMP/BLAS/numba/torch), as the rules' threads: 1"}
    for spec in args.run:
        task, n = spec.split(":")
        before = __import__("resource").getrusage(__import__("resource").RUSAGE_CHILDREN)
        r = run_child(task, int(n), args, args.limit)
        after = __import__("resource").getrusage(__import__("resource").RUSAGE_CHILDREN)
        r["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        r["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data["runs"].append(r)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1, sort_keys=True))
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
