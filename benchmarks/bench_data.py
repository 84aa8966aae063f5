"""Data-layer benchmark: preprocessing and store building (time, peak memory) and loader throughput.

    python benchmarks/bench_data.py --cells 1000000 --genes 2000
    python benchmarks/bench_data.py --cells 200000 --genes 19331
    python benchmarks/bench_data.py --cells 1000000 --stages generate,preprocess,store

Each stage runs in its own subprocess so its peak RSS (ru_maxrss) is its own. The loader part compares
our CSR-shard StoreLoader with shuffled mini-batches read from a backed (on-disk) AnnData, the obvious
well-kept alternative that needs no extra package. Writes benchmarks/results/data_<cells>x<genes>.json;
with ``--stages`` only those stages run, and their results replace the same stages in an existing file
(the replaced ones are kept under ``previous``). A temporary work directory is removed at the end;
one given with ``--workdir`` is kept (and its raw/processed files reused by later ``--stages`` runs).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

STAGE = r'''
import json, resource, sys, time
stage, args = sys.argv[1], json.loads(sys.argv[2])
t = time.perf_counter()
if stage == "generate":
    from scjepa.data.synthetic import write_h5ad_chunked
    write_h5ad_chunked(args["raw"], "pretrain", args["cells"], 50_000, n_genes=args["genes"], seed=1)
elif stage == "preprocess":
    from scjepa.data.genes import GeneSpace
    from scjepa.data.preprocess import PreprocessConfig, preprocess
    import anndata as ad
    raw = ad.read_h5ad(args["raw"], backed="r")
    space = GeneSpace(raw.var_names, raw.var["gene_symbol"]); raw.file.close()
    cfg = PreprocessConfig(columns={"cell_type": "cell_type", "donor": "donor", "batch": "batch"},
                           chunk_size=args["chunk"], dataset="bench")
    preprocess(args["raw"], space, args["processed"], cfg, progress=False)
elif stage == "store":
    from scjepa.data.store import build_store
    build_store(args["processed"], args["store"], shard_size=8192, chunk_size=args.get("store_chunk"),
                progress=False)
elif stage == "load_store":
    from scjepa.data.store import StoreLoader
    n = 0
    for b in StoreLoader(args["store"], batch_size=1024, seed=0):
        n += len(b["x"])
        if n >= args["load_cells"]:
            break
    args["loaded"] = n
elif stage == "load_backed":
    import numpy as np, torch, anndata as ad
    a = ad.read_h5ad(args["processed"], backed="r")
    rng = np.random.default_rng(0); n = 0
    while n < args["load_cells"]:
        idx = np.sort(rng.choice(a.n_obs, 1024, replace=False))
        x = torch.from_numpy(a.X[idx].toarray()); n += len(x)
    args["loaded"] = n
wall = time.perf_counter() - t
print(json.dumps({"stage": stage, "wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "loaded": args.get("loaded")}))
'''


def run_stage(stage: str, args: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", STAGE, stage, json.dumps(args)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


STAGES = ("generate", "preprocess", "store", "load_store", "load_backed")
NEEDS = {"preprocess": "raw", "store": "processed", "load_store": "store", "load_backed": "processed"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cells", type=int, default=200_000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--chunk", type=int, default=10_000, help="preprocessing chunk (cells)")
    p.add_argument("--store-chunk", type=int, default=None,
                   help="build_store's read chunk (cells; default: its shard size, 8,192)")
    p.add_argument("--load-cells", type=int, default=50_000)
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--workdir", default=None, help="kept afterwards; default: a temporary directory, removed")
    a = p.parse_args()
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    stages = [s for s in STAGES if s in stages]
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="scjepa_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    args = {"raw": str(work / "raw.h5ad"), "processed": str(work / "processed.h5ad"), "store": str(work / "store"),
            "cells": a.cells, "genes": a.genes, "chunk": a.chunk, "store_chunk": a.store_chunk,
            "load_cells": a.load_cells}
    for stage in stages:  # an input neither made by an earlier stage of this run nor already there
        need = NEEDS.get(stage)
        made_here = {"raw": "generate", "processed": "preprocess", "store": "store"}.get(need) in stages
        if need and not made_here and not Path(args[need]).exists():
            p.error(f"stage {stage} needs {args[need]}: add its stage or pass the --workdir that has it")
    dest = HERE / "results" / f"data_{a.cells}x{a.genes}.json"
    today = time.strftime("%Y-%m-%d")
    results = {"cells": a.cells, "genes": a.genes, "chunk_size": a.chunk}
    if dest.exists():  # partial runs update the file; what they replace is kept under "previous"
        results = json.loads(dest.read_text())
    try:
        for stage in stages:
            r = run_stage(stage, args)
            n = r["loaded"] if stage.startswith("load") else a.cells
            r["cells_per_s"] = n / r["wall_s"]
            r["date"] = today
            if stage == "store":
                r["store_chunk_size"] = a.store_chunk or 8192
            if stage in results:
                old = dict(results[stage])
                old.setdefault("date", results.get("date"))
                results.setdefault("previous", {}).setdefault(stage, []).append(old)
            results[stage] = r
            print(f"{stage:12s} {r['wall_s']:8.1f} s  {r['cells_per_s']:10.0f} cells/s  "
                  f"peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    results["date"] = today
    if "load_store" in results and "load_backed" in results:
        results["loader_speedup_vs_backed"] = (results["load_store"]["cells_per_s"]
                                               / results["load_backed"]["cells_per_s"])
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
