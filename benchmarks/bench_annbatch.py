"""annbatch against our StoreLoader: store conversion and shuffled mini-batch throughput, same data.

    python benchmarks/bench_annbatch.py --cells 100000
    python benchmarks/bench_annbatch.py --cells 100000 --annbatch-python /tmp/abvenv/bin/python

annbatch (PyPI ``annbatch``, scverse/Lamin's mini-batch loader for on-disk AnnData) needs Python >= 3.12,
newer than this project's venv, so its side runs under a separate interpreter (``--annbatch-python``, or
the environment variable ``ANNBATCH_PYTHON``; default: this interpreter). Set one up with, e.g.::

    python3.12 -m venv /tmp/abvenv
    /tmp/abvenv/bin/pip install 'annbatch[zarrs]==0.3.1' anndata==0.12.19 zarr==3.1.6

Both sides read the same files. The data are bench_data.py's: the synthetic generator's counts,
preprocessed (normalised to 1e4, log1p, float32 CSR) by our preprocess, then

* ours: ``build_store`` (CSR shards of 8,192 cells) read by ``StoreLoader`` (train split);
* annbatch: ``DatasetCollection.add_adatas`` (its shuffled, sharded zarr collection; X and the
  ``cell_type`` label only, as our store keeps) read by ``Loader(shuffle=True)`` with the zarrs codec
  pipeline, as annbatch's README asks for local disks.

Every measurement runs in its own subprocess (peak RSS = that process's ru_maxrss). A loader
measurement skips ``--warmup`` batches and then times ``--batches`` batches of ``--batch-size`` cells,
each densified to a float32 (B, D) array as the training step consumes it (StoreLoader yields a torch
tensor; annbatch yields a scipy CSR, densified with ``.toarray()`` and wrapped by ``torch.from_numpy``,
which copies nothing, when torch is importable there) plus the int64 label codes. Epochs wrap
around. The loader runs alternate (ours, annbatch, ours, ...) ``--repeats`` times so that the ratio
is taken under the same machine load. Writes benchmarks/results/annbatch_<cells>x<genes>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_data import run_stage  # noqa: E402  (generate / preprocess / store stages, same data)

INSTALL_HINT = """annbatch is not importable by {python}.
annbatch needs Python >= 3.12 (this project's venv may be older); install it in a separate venv, e.g.
    python3.12 -m venv /tmp/abvenv
    /tmp/abvenv/bin/pip install 'annbatch[zarrs]==0.3.1'
and pass --annbatch-python /tmp/abvenv/bin/python (or set ANNBATCH_PYTHON).
The import said: {error}"""

# shared by both sides' loader stages: time a window of densified batches after a warm-up
COMMON = r'''
import json, os, resource, sys, time
import numpy as np
def vmrss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
def measure(epochs, warmup, n_batches, batch_size):
    """epochs(e) -> iterator of (x: float32 (B, D), y: int64 (B,)); batches counted across epochs."""
    seen, e, t0, c0, n = 0, 0, None, None, 0
    t_start = time.perf_counter()
    first = None
    while True:
        for x, y in epochs(e):
            assert x.dtype == np_f32 and x.shape[0] == batch_size and len(y) == batch_size, (x.dtype, x.shape)
            seen += 1
            if first is None:
                first = time.perf_counter() - t_start
            if seen == warmup:
                t0, c0 = time.perf_counter(), cpu_s()
            elif seen > warmup:
                n += x.shape[0]
                if seen == warmup + n_batches:
                    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
                    return {"batches": n_batches, "cells": n, "wall_s": wall, "cpu_s": cpu,
                            "cells_per_s": n / wall, "cpu_s_per_1k_cells": 1000 * cpu / n,
                            "first_batch_s": first, "warmup_batches": warmup, "epochs_touched": e + 1}
        e += 1
'''

STORE_STAGE = COMMON + r'''
args = json.loads(sys.argv[1])
import torch
from scjepa.data.store import StoreLoader
np_f32 = torch.float32
rss0 = vmrss_mb()
loader = StoreLoader(args["store"], batch_size=args["batch_size"], seed=0, drop_last=True)
def epochs(e):
    loader.set_epoch(e)
    for b in loader:
        yield b["x"], b["y"]
r = measure(epochs, args["warmup"], args["batches"], args["batch_size"])
r.update(loader="StoreLoader", n_cells_split=loader.n_cells, rss_after_imports_mb=rss0,
         peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
         config={"buffer_shards": loader.buffer_shards, "prefetch": loader.prefetch, "shard_size": 8192})
print(json.dumps(r))
'''

ANNBATCH_PRE = r'''
import zarr
try:
    zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})
    import zarrs  # noqa: F401
    PIPELINE = "zarrs.ZarrsCodecPipeline"
except ImportError:
    PIPELINE = "zarr default (zarrs not installed)"
'''

CONVERT_STAGE = r'''
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore", message="Consolidated metadata")  # zarr's note on its own v3 extension
args = json.loads(sys.argv[1])
''' + ANNBATCH_PRE + r'''
t = time.perf_counter()
import h5py, numpy as np, pandas as pd, anndata as ad
from annbatch import DatasetCollection

def load_x_and_label(path):
    """X (lazy) and the label only: what our store keeps (not layers["counts"] nor the other obs)."""
    a = ad.experimental.read_lazy(path, load_annotation_index=False)
    with h5py.File(path, "r") as f:
        ct = ad.io.read_elem(f["obs"]["cell_type"])
        var = f["var"]
        genes = ad.io.read_elem(var[var.attrs["_index"]])
    obs = pd.DataFrame({"cell_type": pd.Categorical(ct)}, index=pd.RangeIndex(a.n_obs).astype(str))
    return ad.AnnData(X=a.X, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))

kw = {}
if args.get("dataset_size"):
    kw["dataset_size"] = int(args["dataset_size"]) if str(args["dataset_size"]).isdigit() else args["dataset_size"]
DatasetCollection(args["collection"]).add_adatas([args["processed"]], load_adata=load_x_and_label,
                                                  rng=np.random.default_rng(0), **kw)
wall = time.perf_counter() - t
print(json.dumps({"stage": "annbatch_convert", "wall_s": wall, "codec_pipeline": PIPELINE,
                  "dataset_size": kw.get("dataset_size", "20GB (default)"),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

ANNBATCH_STAGE = COMMON + r'''
args = json.loads(sys.argv[1])
''' + ANNBATCH_PRE + r'''
import anndata as ad
from annbatch import DatasetCollection, Loader
try:
    import torch
    to_tensor = torch.from_numpy
    np_f32 = torch.float32
    densify = "torch.from_numpy(X.toarray())"
except ImportError:
    to_tensor = lambda a: a  # torch.from_numpy would wrap the same buffer without a copy
    np_f32 = np.float32
    densify = "X.toarray() (float32 numpy; torch not installed beside annbatch)"
rss0 = vmrss_mb()

def load(g):
    return ad.AnnData(X=ad.io.sparse_dataset(g["X"]), obs=ad.io.read_elem(g["obs"])[["cell_type"]])

with ad.settings.override(remove_unused_categories=False):
    loader = Loader(batch_size=args["batch_size"], chunk_size=args["chunk_size"],
                    preload_nchunks=args["preload_nchunks"], shuffle=True, drop_last=True,
                    rng=np.random.default_rng(0), preload_to_gpu=False)
    loader = loader.use_collection(DatasetCollection(args["collection"], mode="r"), load_adata=load)

def epochs(e):
    for b in loader:
        yield to_tensor(b["X"].toarray()), b["obs"]["cell_type"].cat.codes.to_numpy().astype(np.int64)

r = measure(epochs, args["warmup"], args["batches"], args["batch_size"])
r.update(loader="annbatch.Loader", n_cells_split=loader.n_obs, rss_after_imports_mb=rss0,
         peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, densify=densify,
         config={"chunk_size": args["chunk_size"], "preload_nchunks": args["preload_nchunks"],
                 "codec_pipeline": PIPELINE, "preload_to_gpu": False})
print(json.dumps(r))
'''

VERSIONS = r'''
import json, sys
from importlib.metadata import version, PackageNotFoundError
out = {"python": sys.version.split()[0]}
for p in sys.argv[1].split(","):
    try:
        out[p] = version(p)
    except PackageNotFoundError:
        out[p] = None
import annbatch  # noqa: F401  (fails here, with its message, if it cannot be imported)
print(json.dumps(out))
'''


def run_code(python: str, code: str, args: dict, env: dict | None = None) -> dict:
    proc = subprocess.run([python, "-c", code, json.dumps(args)], stdout=subprocess.PIPE, text=True,
                          env=env)
    if proc.returncode != 0:
        raise SystemExit(f"subprocess failed (exit {proc.returncode}) under {python}; see its stderr above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def versions(python: str, pkgs: str) -> dict:
    proc = subprocess.run([python, "-c", VERSIONS, pkgs], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise RuntimeError(err)
    return json.loads(proc.stdout)


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--batches", type=int, default=100, help="timed batches per loader run")
    p.add_argument("--warmup", type=int, default=10, help="batches before the timed window")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs of each loader configuration")
    p.add_argument("--annbatch-python", default=os.environ.get("ANNBATCH_PYTHON", sys.executable),
                   help="interpreter that has annbatch (Python >= 3.12); default $ANNBATCH_PYTHON or this one")
    p.add_argument("--annbatch-configs", default="32x256,512x32",
                   help="annbatch Loader chunk_size x preload_nchunks, comma-separated (README's example: "
                        "32x256; its defaults: 512x32)")
    p.add_argument("--dataset-size", default=None,
                   help="annbatch add_adatas dataset_size (cells or e.g. '2GB'; default: annbatch's 20GB)")
    p.add_argument("--workdir", default=None, help="kept afterwards (and its files reused); default: temporary")
    a = p.parse_args()
    if a.warmup < 1 or a.batches < 1 or a.repeats < 1:
        p.error("--warmup, --batches and --repeats must be >= 1")

    try:
        ab_versions = versions(a.annbatch_python, "annbatch,anndata,zarr,zarrs,numpy,scipy,pandas,dask,torch")
    except (RuntimeError, FileNotFoundError) as exc:
        print(INSTALL_HINT.format(python=a.annbatch_python, error=exc), file=sys.stderr)
        raise SystemExit(2)
    from importlib.metadata import version
    our_versions = {"python": platform.python_version(),
                    **{k: version(k) for k in ("anndata", "zarr", "numpy", "scipy", "torch")}}
    configs = []
    for c in a.annbatch_configs.split(","):
        cs, pn = c.lower().split("x")
        configs.append({"chunk_size": int(cs), "preload_nchunks": int(pn)})

    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="scjepa_annbatch_"))
    work.mkdir(parents=True, exist_ok=True)
    args = {"raw": str(work / "raw.h5ad"), "processed": str(work / "processed.h5ad"),
            "store": str(work / "store"), "collection": str(work / "annbatch.zarr"),
            "cells": a.cells, "genes": a.genes, "chunk": 10_000, "store_chunk": None,
            "batch_size": a.batch_size, "batches": a.batches, "warmup": a.warmup,
            "dataset_size": a.dataset_size}
    load0 = os.getloadavg()
    results = {"cells": a.cells, "genes": a.genes, "batch_size": a.batch_size, "date": time.strftime("%Y-%m-%d"),
               "machine": {"nproc": os.cpu_count(), "loadavg_start": load0, "platform": platform.platform()},
               "versions": {"ours": our_versions, "annbatch_side": ab_versions}}
    try:
        for stage, path in (("generate", "raw"), ("preprocess", "processed"), ("store", "store")):
            if Path(args[path]).exists():
                print(f"{stage:22s} reusing {args[path]}", flush=True)
                continue
            r = run_stage(stage, args)
            results[stage] = r
            print(f"{stage:22s} {r['wall_s']:7.1f} s  peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)
        if not Path(args["collection"]).exists():
            r = run_code(a.annbatch_python, CONVERT_STAGE, args)
            results["annbatch_convert"] = r
            print(f"{'annbatch_convert':22s} {r['wall_s']:7.1f} s  peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)
        else:
            print(f"{'annbatch_convert':22s} reusing {args['collection']}", flush=True)
        results["disk_mb"] = {"processed_h5ad": Path(args["processed"]).stat().st_size / 2**20,
                              "our_store": du_mb(Path(args["store"])),
                              "annbatch_collection": du_mb(Path(args["collection"]))}

        runs: dict[str, list[dict]] = {"store": []}
        for rep in range(a.repeats):
            r = run_code(sys.executable, STORE_STAGE, args)
            runs["store"].append(r)
            print(f"load StoreLoader    #{rep}  {r['cells_per_s']:8.0f} cells/s  "
                  f"{r['cpu_s_per_1k_cells']:.3f} CPU-s/1k cells  peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)
            for c in configs:
                key = f"annbatch_{c['chunk_size']}x{c['preload_nchunks']}"
                r = run_code(a.annbatch_python, ANNBATCH_STAGE, {**args, **c})
                runs.setdefault(key, []).append(r)
                print(f"load {key:15s}#{rep}  {r['cells_per_s']:8.0f} cells/s  "
                      f"{r['cpu_s_per_1k_cells']:.3f} CPU-s/1k cells  peak RSS {r['peak_rss_mb']:6.0f} MB",
                      flush=True)
        results["loaders"] = {}
        for key, rs in runs.items():
            results["loaders"][key] = {
                "cells_per_s_median": statistics.median(r["cells_per_s"] for r in rs),
                "cpu_s_per_1k_cells_median": statistics.median(r["cpu_s_per_1k_cells"] for r in rs),
                "peak_rss_mb_max": max(r["peak_rss_mb"] for r in rs),
                "runs": rs}
        ours = results["loaders"]["store"]["cells_per_s_median"]
        results["store_speedup_vs"] = {k: ours / v["cells_per_s_median"]
                                       for k, v in results["loaders"].items() if k != "store"}
        # per repeat, the ratio within the same stretch of machine load
        results["store_speedup_vs_per_repeat"] = {
            k: [s["cells_per_s"] / r["cells_per_s"] for s, r in zip(runs["store"], v)]
            for k, v in runs.items() if k != "store"}
        results["machine"]["loadavg_end"] = os.getloadavg()
        for k, v in results["store_speedup_vs"].items():
            print(f"StoreLoader / {k}: {v:.2f}x")
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    dest = HERE / "results" / f"annbatch_{a.cells}x{a.genes}.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
