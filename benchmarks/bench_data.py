"""Data-layer benchmark: preprocessing and store building (time, peak memory) and loader throughput.

    python benchmarks/bench_data.py --cells 1000000 --genes 2000
    python benchmarks/bench_data.py --cells 200000 --genes 19331

Each stage runs in its own subprocess so its peak RSS (ru_maxrss) is its own. The loader part compares
our CSR-shard StoreLoader with shuffled mini-batches read from a backed (on-disk) AnnData, the obvious
well-kept alternative that needs no extra package. Writes benchmarks/results/data_<cells>x<genes>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
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
    build_store(args["processed"], args["store"], shard_size=8192, progress=False)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cells", type=int, default=200_000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--chunk", type=int, default=10_000)
    p.add_argument("--load-cells", type=int, default=50_000)
    p.add_argument("--workdir", default=None)
    a = p.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="scjepa_bench_"))
    args = {"raw": str(work / "raw.h5ad"), "processed": str(work / "processed.h5ad"), "store": str(work / "store"),
            "cells": a.cells, "genes": a.genes, "chunk": a.chunk, "load_cells": a.load_cells}
    results = {"cells": a.cells, "genes": a.genes, "chunk_size": a.chunk, "date": time.strftime("%Y-%m-%d")}
    for stage in ("generate", "preprocess", "store", "load_store", "load_backed"):
        r = run_stage(stage, args)
        n = r["loaded"] if stage.startswith("load") else a.cells
        r["cells_per_s"] = n / r["wall_s"]
        results[stage] = r
        print(f"{stage:12s} {r['wall_s']:8.1f} s  {r['cells_per_s']:10.0f} cells/s  peak RSS {r['peak_rss_mb']:7.0f} MB",
              flush=True)
    results["loader_speedup_vs_backed"] = results["load_store"]["cells_per_s"] / results["load_backed"]["cells_per_s"]
    dest = HERE / "results" / f"data_{a.cells}x{a.genes}.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
