"""The CSR loader at the paper's gene count: measured here, predicted for a GPU node.

    python benchmarks/bench_loader.py --workdir /tmp/bench_loader            # everything
    python benchmarks/bench_loader.py --workdir /tmp/bench_loader --stages loader,predict

Stages (each measurement in a fresh process, repeated ``--repeats`` times; medians are reported, the
machine is shared and noisy):

- ``store``: a synthetic processed corpus of scTab's shape, D = 19,331 genes and a uniform 1,000-3,000
  non-zeros per cell (mean 2,000; scTab-like), written as an h5ad and turned into a store by the
  project's own ``build_store`` with the paper's layout (16,384-cell shards, buffers of 8 shards).
- ``loader``: ``StoreLoader(sparse=True)`` (the pretraining configuration: CSR batches of 1,024 cells)
  with 1 worker thread (rows copied as numpy slices) and 2 (the compiled GIL-free copy), two epochs per
  process (epoch 0 maps the shards; epoch 1 is the steady state): cells per second of wall time and per
  CPU-second of the process (all threads), CSR GB/s, and the host -> device bytes per cell
  (``CSRBatch.nbytes``) against the dense batch's 4·D.
- ``scaling``: what the GIL costs worker threads: for each row-copy kernel (numpy slices, used by one
  worker; the compiled GIL-free loop, used by several), two threads in one process against two
  one-thread processes started together (same external load; only the threads share a GIL).
- ``densify``: on CPU (1 thread), ``CSRBatch.to_dense`` of a 1,024-cell batch and of a 256-cell one,
  against one scJEPA training step (paper hyper-parameters, 9 views) on the 256-cell batch.
- ``flops``: the matmul FLOPs of one scJEPA step per cell at the paper's settings, read off the model
  (``bench_pretrain.record_linears``) on a small batch (FLOPs are linear in the batch).
- ``ddp``: pretraining on CPU at D = 2,000 (the default config's shape): 2 data-parallel ranks
  (torchrun, gloo, 1 thread each) against 1 process with 1 and with 2 threads, the same global batch
  and steps.
- ``predict``: the loader's rate on a 16-core node with one H100 against what the GPU consumes, and the
  wall time of ``config/paper.yaml``'s pretraining, with the arithmetic (written into the JSON).

Writes benchmarks/results/loader_19331.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
D_PAPER = 19_331
H100_BF16_DENSE_TFLOPS = 989.0  # H100 SXM, dense bf16 tensor-core peak (NVIDIA datasheet)
GPU_EFFICIENCY = 0.40  # the assumption: 40 % of that peak at these shapes
SCTAB_TRAIN_CELLS = 15_240_000  # scTab's training split (the paper's corpus; config/paper.yaml)
PAPER_EPOCHS = 10
NODE_CORES = 16
STAGES = ("store", "loader", "scaling", "densify", "flops", "ddp", "predict")

WRITE_PROCESSED = r'''
import json, sys, time
import anndata as ad, numpy as np, pandas as pd, scipy.sparse as sp
a = json.loads(sys.argv[1])
n, D, lo, hi = a["cells"], a["genes"], a["nnz_lo"], a["nnz_hi"]
rng = np.random.default_rng(0)
nnz = rng.integers(lo, hi + 1, n)
indptr = np.zeros(n + 1, np.int64); np.cumsum(nnz, out=indptr[1:])
idx = np.empty(int(indptr[-1]), np.int32)
for i in range(n):  # distinct genes per cell, sorted (canonical CSR, as preprocessing writes)
    idx[indptr[i]:indptr[i + 1]] = np.sort(rng.choice(D, nnz[i], replace=False))
counts = rng.geometric(0.5, int(indptr[-1])).astype(np.float32)  # mostly 1-2 UMIs
libsize = np.add.reduceat(counts, indptr[:-1])
data = np.log1p(counts * np.repeat(1e4 / libsize, nnz)).astype(np.float32)
X = sp.csr_matrix((data, idx, indptr), shape=(n, D))
obs = pd.DataFrame({"cell_type": pd.Categorical(rng.integers(0, 164, n).astype(str)),
                    "split": pd.Categorical(np.where(rng.random(n) < 0.95, "train", "val"))},
                   index=[f"c{i}" for i in range(n)])
ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(D)])).write_h5ad(a["processed"])
from scjepa.data.store import build_store
t = time.perf_counter()
build_store(a["processed"], a["store"], shard_size=a["shard_size"], progress=False)
print(json.dumps({"build_store_s": time.perf_counter() - t, "nnz_mean": float(nnz.mean())}))
'''

LOAD = r'''
import json, os, sys, time
import torch
from scjepa.data.store import StoreLoader
from scjepa.methods.engine import use_caching_malloc
a = json.loads(sys.argv[1])
# batch buffers reused instead of freshly faulted in: what pretrain() sets up on CPU, and what the CUDA
# caching host allocator gives the pinned batches on a GPU node
use_caching_malloc()
torch.set_num_threads(1)
L = StoreLoader(a["store"], batch_size=a["batch_size"], seed=a["seed"], buffer_shards=a["buffer_shards"],
                workers=a["workers"], sparse=True)
out = []
for epoch in range(a["epochs"]):
    L.set_epoch(epoch)
    n = nbytes = nnz = 0
    t, c = time.perf_counter(), time.process_time()
    for b in L:
        x = b["x"]
        n += len(x); nbytes += x.nbytes + b["y"].numel() * 8; nnz += x.col.numel()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    out.append({"epoch": epoch, "cells": n, "wall_s": wall, "cpu_s": cpu, "bytes": nbytes, "nnz": nnz,
                "cells_per_s": n / wall, "cells_per_cpu_s": n / cpu, "csr_gb_per_s": nbytes / wall / 1e9,
                "bytes_per_cell": nbytes / n})
print(json.dumps({"workers": a["workers"], "load_avg": os.getloadavg(), "epochs": out}))
'''

SCALING = r'''
import json, os, sys, threading, time
import torch
from scjepa.data.store import StoreLoader, _row_copier
from scjepa.methods.engine import use_caching_malloc
a = json.loads(sys.argv[1])
use_caching_malloc()  # reused buffers, as pinned memory is reused on a GPU node: no page faults
torch.set_num_threads(1)
L = StoreLoader(a["store"], batch_size=1024, seed=0, buffer_shards=a["buffer_shards"], sparse=True, prefetch=0)
L._copy_rows = _row_copier() if a["kernel"] == "compiled" else None
order, _ = L.epoch_order()
ks = list(range(a["part"], min(len(L), a["batches"]), a["parts"]))
for k in ks[:4]:
    L._gather(L._rows(order, k))  # warm: shards mapped, kernel compiled
def work(my, out):
    n = 0
    for k in my:
        n += len(L._gather(L._rows(order, k))["x"])
    out.append(n)
threads = a["threads"]
out = []
ts = [threading.Thread(target=work, args=(ks[i::threads], out)) for i in range(threads)]
if a.get("start_at"):
    time.sleep(max(0.0, a["start_at"] - time.time()))
t = time.perf_counter()
for th in ts: th.start()
for th in ts: th.join()
print(json.dumps({"cells": sum(out), "wall_s": time.perf_counter() - t}))
'''

GIL_FREE = r'''
import json, sys, time
import torch
from scjepa.data.store import StoreLoader, _row_copier
from scjepa.methods.engine import use_caching_malloc
a = json.loads(sys.argv[1])
use_caching_malloc()
torch.set_num_threads(1)
L = StoreLoader(a["store"], batch_size=1024, seed=1, buffer_shards=a["buffer_shards"], sparse=True, prefetch=0)
kernel = _row_copier()
inside = [0.0]
def timed(*args):
    t = time.perf_counter(); kernel(*args); inside[0] += time.perf_counter() - t
L._copy_rows = timed
order, _ = L.epoch_order()
for k in range(4):
    L._gather(L._rows(order, k))  # warm
inside[0] = 0.0
t = time.perf_counter()
for k in range(4, 4 + a["batches"]):
    L._gather(L._rows(order, k))
total = time.perf_counter() - t
print(json.dumps({"batch_s": total / a["batches"], "in_kernel_s": inside[0] / a["batches"],
                  "gil_free_fraction": inside[0] / total}))
'''

DENSIFY = r'''
import json, statistics, sys, time
import numpy as np, torch
from scjepa.data.store import StoreLoader
from scjepa.methods import FAMILIES
from scjepa.methods.engine import make_optimizer, use_caching_malloc
a = json.loads(sys.argv[1])
torch.set_num_threads(1)
use_caching_malloc()  # as pretrain() does on CPU
L = StoreLoader(a["store"], batch_size=1024, seed=0, sparse=True, prefetch=0)
b1024 = next(iter(L))["x"]
crow = b1024.crow[:257].clone()
b256 = type(b1024)(crow, b1024.col[: int(crow[-1])].clone(), b1024.val[: int(crow[-1])].clone(), (256, b1024.shape[1]))

def best(f, n):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts)

d1024 = best(b1024.to_dense, 7)
d256 = best(b256.to_dense, 7)
method = FAMILIES["scjepa"](device="cpu")
torch.manual_seed(0)
module = method.build_module(b1024.shape[1]).train()
opt = make_optimizer(module, 1e-3, 0.05)
gen = torch.Generator().manual_seed(0)
batch = {"x": b256.to_dense(), "y": torch.zeros(256, dtype=torch.long)}

def step():
    terms = module.training_step(batch, gen)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    opt.step()

step()
s = best(step, a["step_rounds"])
print(json.dumps({"densify_1024_s": d1024, "densify_256_s": d256, "step_256_s": s,
                  "densify_256_over_step": d256[1] / s[1]}))
'''

FLOPS = r'''
import json, sys
import torch
sys.path.insert(0, sys.argv[2])
from bench_pretrain import matmul_products, record_linears, build
from scjepa.methods.engine import make_optimizer
torch.set_num_threads(1)
a = json.loads(sys.argv[1])
module = build("scjepa", a["genes"]).train()
opt = make_optimizer(module, 1e-3, 0.05)
gen = torch.Generator().manual_seed(0)
B = 16
batch = {"x": torch.rand(B, a["genes"]), "y": torch.zeros(B, dtype=torch.long)}
def step():
    terms = module.training_step(batch, gen)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
flops = sum(2.0 * m * k * n for _, m, k, n in matmul_products(record_linears(module, step)))
print(json.dumps({"batch": B, "gflop_per_step": flops / 1e9, "gflop_per_cell": flops / B / 1e9}))
'''

ONE_PROCESS = r'''
import json, sys
from scjepa.logs import start_rule_log
from scjepa.methods import pretrain
start_rule_log(None)
pretrain(**json.loads(open(sys.argv[1]).read()))
'''

TWO_RANKS = r'''
import json, sys
from scjepa.logs import start_rule_log
from scjepa.methods.distributed import launch
start_rule_log(None)
launch(2, json.loads(open(sys.argv[1]).read()))
'''


def py(code: str, *args: str, capture_stderr: bool = False) -> tuple[dict | None, str]:
    r = subprocess.run([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE if capture_stderr else None, text=True, check=True)
    lines = [ln for ln in r.stdout.strip().splitlines() if ln.startswith("{")]
    return (json.loads(lines[-1]) if lines else None), (r.stderr or "")


def med(xs):
    return statistics.median(xs) if xs else None


def stage_store(a, work: Path) -> dict:
    store = work / f"store_{a.genes}"
    if (store / "meta.json").exists():
        print(f"store: reusing {store}")
        return json.loads((work / f"store_{a.genes}.json").read_text())
    args = {"cells": a.cells, "genes": a.genes, "nnz_lo": a.nnz[0], "nnz_hi": a.nnz[1], "shard_size": a.shard_size,
            "processed": str(work / f"processed_{a.genes}.h5ad"), "store": str(store)}
    t = time.perf_counter()
    r, _ = py(WRITE_PROCESSED, json.dumps(args))
    r.update(args, wall_s=time.perf_counter() - t,
             store_bytes=sum(p.stat().st_size for p in (store / "train").glob("*.npz")),
             train_cells=json.loads((store / "meta.json").read_text())["splits"]["train"]["n_cells"])
    r["store_bytes_per_cell"] = r["store_bytes"] / r["train_cells"]
    (work / f"store_{a.genes}.json").write_text(json.dumps(r, indent=2))
    Path(args["processed"]).unlink()  # only the store is read from here on
    print(f"store: {r['train_cells']} train cells, {r['store_bytes'] / 1e9:.2f} GB, build_store {r['build_store_s']:.1f} s")
    return r


def stage_loader(a, work: Path) -> dict:
    runs = {}
    for rep in range(a.repeats):
        for w in a.workers:  # alternate the configurations: drifting machine load hits both alike
            args = {"store": str(work / f"store_{a.genes}"), "batch_size": 1024, "buffer_shards": a.buffer_shards,
                    "workers": w, "seed": rep, "epochs": 2}
            r, _ = py(LOAD, json.dumps(args))
            runs.setdefault(w, []).append(r)
            e0, e1 = r["epochs"]
            print(f"loader workers={w} #{rep}: epoch 0 {e0['cells_per_s']:8.0f} cells/s ({e0['cells_per_cpu_s']:8.0f}/CPU-s)"
                  f"  epoch 1 {e1['cells_per_s']:8.0f} cells/s ({e1['cells_per_cpu_s']:8.0f}/CPU-s, "
                  f"{e1['csr_gb_per_s']:.2f} GB/s)  load {r['load_avg'][0]:.1f}", flush=True)
    summary = {}
    for w, rs in runs.items():
        s = {}
        for e in (0, 1):
            s[f"epoch{e}_cells_per_s"] = med([r["epochs"][e]["cells_per_s"] for r in rs])
            s[f"epoch{e}_cells_per_cpu_s"] = med([r["epochs"][e]["cells_per_cpu_s"] for r in rs])
            s[f"epoch{e}_csr_gb_per_s"] = med([r["epochs"][e]["csr_gb_per_s"] for r in rs])
        s["bytes_per_cell"] = med([r["epochs"][1]["bytes_per_cell"] for r in rs])
        s["load_avg_1min"] = [r["load_avg"][0] for r in rs]
        summary[str(w)] = s
    return {"runs": {str(k): v for k, v in runs.items()}, "median": summary}


def stage_scaling(a, work: Path) -> dict:
    """Two worker threads in one process against two one-thread processes started together, for each copy
    kernel. Both see the same load from other users of the machine; the threads share one GIL, the
    processes do not, so threads / processes isolates what the GIL costs."""
    base = {"store": str(work / f"store_{a.genes}"), "buffer_shards": a.buffer_shards, "batches": 96}
    rows = {}
    for rep in range(a.repeats):
        for kernel in ("slices", "compiled"):
            r1, _ = py(SCALING, json.dumps({**base, "kernel": kernel, "threads": 1, "part": 0, "parts": 1}))
            r2, _ = py(SCALING, json.dumps({**base, "kernel": kernel, "threads": 2, "part": 0, "parts": 1}))
            start = time.time() + 4.0  # both processes import and warm up, then start together
            procs = [subprocess.Popen([sys.executable, "-c", SCALING, json.dumps(
                {**base, "kernel": kernel, "threads": 1, "part": i, "parts": 2, "start_at": start})],
                stdout=subprocess.PIPE, text=True) for i in range(2)]
            outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
            one = r1["cells"] / r1["wall_s"]
            thr = r2["cells"] / r2["wall_s"]
            prc = sum(o["cells"] for o in outs) / max(o["wall_s"] for o in outs)
            row = {"one_thread": one, "two_threads": thr, "two_processes": prc, "load_avg": os.getloadavg()[0]}
            rows.setdefault(kernel, []).append(row)
            print(f"scaling {kernel:8s} #{rep}: 1 thread {one:8.0f}, 2 threads {thr:8.0f} ({thr / one:.2f}x), "
                  f"2 processes {prc:8.0f} ({prc / one:.2f}x) cells/s; load {row['load_avg']:.1f}", flush=True)
    median = {k: {"one_thread": med([r["one_thread"] for r in v]), "two_threads": med([r["two_threads"] for r in v]),
                  "two_processes": med([r["two_processes"] for r in v]),
                  "threads_over_processes": med([r["two_threads"] / r["two_processes"] for r in v])}
              for k, v in rows.items()}
    # load-independent: the share of a batch's time a worker spends inside the compiled copy, i.e.
    # without the GIL; the GIL then bounds the workers of one process at 1 / (1 - share) workers' worth
    gf = [py(GIL_FREE, json.dumps({**base, "batches": 60}))[0] for _ in range(a.repeats)]
    share = med([g["gil_free_fraction"] for g in gf])
    print(f"compiled copy: {share:.0%} of a batch's time without the GIL -> at most {1 / (1 - share):.1f} "
          "workers' worth of throughput per process", flush=True)
    return {"runs": rows, "median": median, "gil_free": gf, "gil_free_fraction": share,
            "gil_bound_workers": 1 / (1 - share)}


def stage_densify(a, work: Path) -> dict:
    rs = [py(DENSIFY, json.dumps({"store": str(work / f"store_{a.genes}"), "step_rounds": 2}))[0]
          for _ in range(a.repeats)]
    out = {k: med([r[k][1] if isinstance(r[k], list) else r[k] for r in rs])
           for k in ("densify_1024_s", "densify_256_s", "step_256_s", "densify_256_over_step")}
    out["runs"] = rs
    print(f"densify: 1024 cells {out['densify_1024_s'] * 1e3:.1f} ms, 256 cells {out['densify_256_s'] * 1e3:.1f} ms;"
          f" scJEPA step (256 cells, 1 thread) {out['step_256_s']:.2f} s")
    return out


def stage_flops(a, work: Path) -> dict:
    r, _ = py(FLOPS, json.dumps({"genes": a.genes}), str(HERE))
    print(f"flops: {r['gflop_per_cell']:.3f} GFLOP per cell per step (scJEPA, D={a.genes})")
    return r


def stage_ddp(a, work: Path) -> dict:
    """2 ranks (1 thread each, torchrun + gloo) against 1 process with 1 and with 2 threads, on a
    D = 2,000 store, the same global batch and steps; wall time includes start-up (torchrun, imports),
    "train_s" is the training loop as the engine logs it."""
    genes = 2000
    store = work / f"store_{genes}"
    if not (store / "meta.json").exists():
        args = {"cells": 40_000, "genes": genes, "nnz_lo": 100, "nnz_hi": 500, "shard_size": 4096,
                "processed": str(work / f"processed_{genes}.h5ad"), "store": str(store)}
        py(WRITE_PROCESSED, json.dumps(args))
        Path(args["processed"]).unlink()
    hp = {"family": "scjepa", "batch_size": 256, "max_steps": a.ddp_steps, "max_epochs": 10, "val_every": 0,
          "checkpoint_every": 0, "log_every": 10_000, "device": "cpu", "progress": False}
    variants = (("one_process_1_thread", ONE_PROCESS, 1), ("one_process_2_threads", ONE_PROCESS, 2),
                ("two_ranks", TWO_RANKS, 2))
    rows = {k: [] for k, _, _ in variants}
    for rep in range(a.repeats):
        for kind, code, threads in variants:
            out = work / f"ddp_{kind}"
            spec = work / f"ddp_{kind}.json"
            spec.write_text(json.dumps({"hparams": hp, "store_dir": str(store), "val_h5ad": None,
                                        "out_dir": str(out / "model"), "seed": 0, "method_name": "scjepa",
                                        "num_threads": threads, "work_dir": str(out / f"work{rep}")}))
            t = time.perf_counter()
            _, err = py(code, str(spec), capture_stderr=True)
            wall = time.perf_counter() - t
            loop = [ln for ln in err.splitlines() if "trained" in ln and "steps in" in ln]
            train_s = float(loop[-1].split("steps in ")[1].split(" s")[0]) if loop else None
            rows[kind].append({"wall_s": wall, "train_s": train_s, "load_avg": os.getloadavg()[0]})
            print(f"ddp {kind} #{rep}: {wall:.1f} s wall (training loop {train_s} s)", flush=True)
            import shutil

            shutil.rmtree(out, ignore_errors=True)
    summary = {k: {"wall_s": med([r["wall_s"] for r in v]), "train_s": med([r["train_s"] for r in v])}
               for k, v in rows.items()}
    return {"genes": genes, "batch_size": 256, "steps": a.ddp_steps, "runs": rows, "median": summary}


def stage_predict(res: dict, a) -> dict:
    ld = res["loader"]["median"]
    slices, compiled = ld["1"], ld.get("2", ld["1"])
    # a GPU node runs many workers, i.e. the compiled copy: its steady-state cells per CPU-second (all
    # threads of the process counted, the consumer included)
    per_core = compiled["epoch1_cells_per_cpu_s"]
    per_core_cold = compiled["epoch0_cells_per_cpu_s"]  # the first pass over freshly mapped shards
    bound = res.get("scaling", {}).get("gil_bound_workers")
    gflop_cell = res["flops"]["gflop_per_cell"]
    gpu_rate = GPU_EFFICIENCY * H100_BF16_DENSE_TFLOPS * 1e3 / gflop_cell  # cells/s
    workers = NODE_CORES - 1  # one core runs the training loop
    # linear in cores, capped by the GIL: the workers of one process cannot exceed `bound` workers' worth
    effective = min(workers, bound) if bound else workers
    node_rate = effective * per_core
    target = 1.5 * gpu_rate
    bytes_cell = compiled["bytes_per_cell"]
    train_cells = SCTAB_TRAIN_CELLS * PAPER_EPOCHS
    rate = min(node_rate, gpu_rate)
    store_bytes_cell = res["store"]["store_bytes_per_cell"]
    p = {
        "assumptions": {
            "gpu": f"H100 SXM, {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s dense bf16, {GPU_EFFICIENCY:.0%} of it",
            "node": f"{NODE_CORES} cores: 1 for the training loop, {workers} loader workers",
            "corpus": f"scTab train split {SCTAB_TRAIN_CELLS:,} cells x {PAPER_EPOCHS} epochs (config/paper.yaml)",
            "per_core": "steady-state cells per CPU-second of the 2-worker loader (compiled copy), linear in "
                        "cores up to the GIL bound of the scaling stage",
        },
        "gflop_per_cell": gflop_cell,
        "gpu_cells_per_s": gpu_rate,
        "loader_cells_per_core_s": per_core,
        "loader_cells_per_core_s_slices_1_worker": slices["epoch1_cells_per_cpu_s"],
        "loader_cells_per_core_s_first_pass": per_core_cold,
        "gil_bound_workers": bound,
        "effective_workers": effective,
        "node_loader_cells_per_s": node_rate,
        "node_loader_cells_per_s_first_pass": effective * per_core_cold,
        "target_cells_per_s": target,
        "node_over_gpu": node_rate / gpu_rate,
        "cores_needed_for_1_5x": target / per_core,
        "bytes_per_cell_host_to_device": bytes_cell,
        "dense_bytes_per_cell": 4 * a.genes,
        "host_to_device_gb_per_s_at_gpu_rate": gpu_rate * bytes_cell / 1e9,
        "disk_gb_per_s_at_gpu_rate": gpu_rate * store_bytes_cell / 1e9,
        "sctab_store_gb": SCTAB_TRAIN_CELLS * store_bytes_cell / 1e9,
        "paper_pretraining_s": train_cells / rate,
        "arithmetic": (
            f"GPU: {GPU_EFFICIENCY} x {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s / {gflop_cell:.3f} GFLOP per cell = "
            f"{gpu_rate:,.0f} cells/s. Loader: min({workers} workers, GIL bound {bound or float('inf'):.1f}) x "
            f"{per_core:,.0f} cells/CPU-s = {node_rate:,.0f} cells/s = {node_rate / gpu_rate:.2f}x the GPU (target "
            f"1.5x = {target:,.0f}: {target / per_core:.1f} cores). Paper pretraining: {PAPER_EPOCHS} x "
            f"{SCTAB_TRAIN_CELLS:,} cells / {rate:,.0f} cells/s = {train_cells / rate:,.0f} s = "
            f"{train_cells / rate / 60:.1f} min of steps (no val kNN, start-up, checkpoints), if the store "
            f"({SCTAB_TRAIN_CELLS * store_bytes_cell / 1e9:,.0f} GB) is read at "
            f"{gpu_rate * store_bytes_cell / 1e9:.1f} GB/s; host -> device {gpu_rate * bytes_cell / 1e9:.1f} GB/s."),
    }
    if "2" in ld:
        p["two_worker_wall_speedup"] = compiled["epoch1_cells_per_s"] / slices["epoch1_cells_per_s"]
    print(p["arithmetic"])
    return p


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True, help="the synthetic store lives here (kept, reused)")
    ap.add_argument("--cells", type=int, default=180_000)
    ap.add_argument("--genes", type=int, default=D_PAPER)
    ap.add_argument("--nnz", type=int, nargs=2, default=(1000, 3000), help="non-zeros per cell: uniform in [lo, hi]")
    ap.add_argument("--shard-size", type=int, default=16_384)
    ap.add_argument("--buffer-shards", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ddp-steps", type=int, default=40)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--out", default=str(HERE / "results" / "loader_19331.json"))
    a = ap.parse_args(argv)
    stages = [s for s in a.stages.split(",") if s]
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(a.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    res["meta"] = {"date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
                   "load_avg_at_start": os.getloadavg(), "repeats": a.repeats, "cells": a.cells, "genes": a.genes,
                   "nnz_per_cell": list(a.nnz), "shard_size": a.shard_size, "buffer_shards": a.buffer_shards,
                   "timing": "medians over repeats; each repeat a fresh process"}
    for s in STAGES:
        if s not in stages:
            continue
        if s == "predict":
            res["predict"] = stage_predict(res, a)
        else:
            res[s] = {"store": stage_store, "loader": stage_loader, "scaling": stage_scaling, "densify": stage_densify,
                      "flops": stage_flops, "ddp": stage_ddp}[s](a, work)
            if isinstance(res[s], dict):
                res[s]["date"], res[s]["repeats"] = time.strftime("%Y-%m-%d"), a.repeats
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n")
        os.replace(tmp, out)
    return res


if __name__ == "__main__":
    main()
