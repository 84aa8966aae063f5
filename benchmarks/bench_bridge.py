"""Time and peak memory of one leave-one-timepoint-out bridge evaluation as snapshots grow.

    .venv/bin/python benchmarks/bench_bridge.py                    # 1k, 10k, 50k cells per snapshot
    .venv/bin/python benchmarks/bench_bridge.py --sizes 1000 5000  # other sizes

Each size runs in its own subprocess (so ``ru_maxrss`` is that size's peak resident memory) on a
synthetic three-snapshot time course: a 16-D latent (a branching drift with noise) and a 5-D
whitened reference space (a fixed linear image of the latent plus noise). "One evaluation" is what
``scjepa.tasks.bridge.leave_one_timepoint_out`` does for one held-out time at a fixed σ and one seed:
the latent Schrödinger-bridge coupling (Sinkhorn, ε = 2σ²Δt), the bridge sample with its noise carried
into the reference space, the exact-OT (σ = 0) coupling in the latent, the random coupling, the bridge
in the reference space itself (the "expression PCs" row; Sinkhorn in 5-D), and nine W1 distances
(reference: bridge, exact OT, random, expression PCs, previous, next; latent: bridge, previous, next). A
full benchmark run repeats the couplings for every σ of the grid and validation triple (validation
scores are energy distances: O(n²) distance sums, no LP).

What takes over as n grows (library defaults, ``BridgeConfig``):

* entropic plans are dense up to ``max_dense_cells`` = 10,000 per side (the 10k x 10k float64
  plan is 0.8 GB; POT's log-domain Sinkhorn holds ~4 such arrays at its peak), mini-batch OT above:
  a seeded random partition into ⌈n / batch_size⌉ matched batches (batch_size = 2,048), one plan
  per batch, i.e. a block-diagonal coupling;
* exact plans (McCann) are dense up to ``max_exact_cells`` = 5,000 (the network simplex is
  ~cubic: 10k x 10k takes ~2 min here), mini-batch above;
* W1 is exact ``ot.emd2`` on at most ``--max-eval-cells`` (2,000 here) cells per side, drawn at
  random (one fixed draw of the truth for every prediction), because emd2 on 10k x 10k takes
  ~3 min here.

Not used: POT's lazy Sinkhorn (``ot.solve_sample(..., lazy=True)``, O(n) memory) recomputes the
cost every iteration — 2.4 s per iteration at 5k x 5k on this 2-core machine, so ~4 min per
iteration at 50k; GeomLoss/KeOps (POT's ``geomloss`` methods) is not installed and pays off on a GPU.

Writes ``benchmarks/results/bridge.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_snapshots(n: int, seed: int = 0, d: int = 16, r: int = 5):
    """Three snapshots (t = 0, 1, 2) of n cells: latent (n, d) and whitened reference (n, r) each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    branch = rng.normal(size=d)
    branch -= branch @ direction * direction
    branch /= np.linalg.norm(branch)
    A = rng.normal(size=(d, r))
    Z, R = [], []
    for t in range(3):
        fate = np.where(rng.random(n) < 0.6, 1.0, -1.0)
        z = (3.0 * t) * direction + (1.5 * t * fate)[:, None] * branch + rng.normal(size=(n, d))
        Z.append(z)
        R.append(z @ A + 0.3 * rng.normal(size=(n, r)))
    Rall = np.concatenate(R)
    mu, sd = Rall.mean(axis=0), Rall.std(axis=0)
    return Z, [(x - mu) / sd for x in R]


def run_one(n: int, sigma: float, max_eval_cells: int) -> dict:
    import logging

    import numpy as np

    from scjepa.tasks import bridge as B

    import ot  # noqa: F401  (imported before the baseline RSS: torch alone is ~0.4 GB)
    import sklearn  # noqa: F401
    import torch  # noqa: F401

    logging.basicConfig(level=logging.WARNING)
    Z, R = make_snapshots(n)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = B.BridgeConfig.from_dict({"sigmas": [sigma], "sigma_default": sigma, "seeds": [0],
                                    "max_eval_cells": max_eval_cells, "max_cells_per_time": n})
    tc = B.TimeCourse(Z, R, np.arange(3.0), cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    m, _ = B.leave_one_timepoint_out(tc)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sb = tc.coupling(0, 2, sigma)
    mc = tc.coupling(0, 2, 0.0, "latent")
    return {
        "cells_per_snapshot": n,
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),  # all threads of the process: the measure that survives a loaded machine
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_eval_mb": round(rss_data, 1),
        "sb_path": "dense" if sb.dense else f"mini-batch ({len(sb.blocks)} x ~{int(np.ceil(n / len(sb.blocks)))})",
        "exact_path": "dense" if mc.dense else f"mini-batch ({len(mc.blocks)} x ~{int(np.ceil(n / len(mc.blocks)))})",
        "sinkhorn_iterations": int(sb.info["iterations"]),
        "eps": float(sb.info["eps"]),
        "w1_cells": int(min(n, max_eval_cells)),
        "w1_bridge": round(m["w1_bridge"], 4),
        "w1_exact_ot": round(m["w1_exact_ot"], 4),
        "w1_random": round(m["w1_random"], 4),
        "w1_prev": round(m["w1_prev"], 4),
        "w1_expr_pcs": round(m["w1_expr_pcs"], 4),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    ap.add_argument("--sigma", type=float, default=0.2, help="σ in units of the latent scale (fixed, no selection)")
    ap.add_argument("--max-eval-cells", type=int, default=2000)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per size")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bridge.json")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.sigma, args.max_eval_cells)))
        return 0

    rows = []
    for n in args.sizes:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(n), "--sigma", str(args.sigma),
               "--max-eval-cells", str(args.max_eval_cells)]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            rows.append({"cells_per_snapshot": n, "status": f"timeout after {args.timeout} s"})
            print(f"n={n}: timeout", file=sys.stderr)
            continue
        if p.returncode != 0:
            rows.append({"cells_per_snapshot": n, "status": "failed", "error": p.stderr.strip().splitlines()[-1:]})
            print(f"n={n}: failed\n{p.stderr}", file=sys.stderr)
            continue
        row = json.loads(p.stdout.strip().splitlines()[-1])
        row["status"] = "ok"
        row["process_seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"n={n}: {row['seconds']} s wall, {row['cpu_seconds']} s CPU, peak {row['peak_rss_mb']} MB, load "
              f"{row['load_average']}", file=sys.stderr, flush=True)

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "benchmark": "bridge leave-one-timepoint-out (one held-out time, one seed, fixed sigma)",
        "sigma_relative": args.sigma,
        "max_eval_cells": args.max_eval_cells,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_after": load},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print("| cells / snapshot | time (s) | peak RSS (MB) | RSS before (MB) | SB coupling | exact (McCann) | Sinkhorn it. "
          "| W1 on | W1 ref: bridge / exact OT / random / prev / expression PCs |")
    print("|---:|---:|---:|---:|---|---|---:|---:|---|")
    for r in rows:
        if r.get("status") != "ok":
            print(f"| {r['cells_per_snapshot']:,} | {r['status']} | | | | | | | |")
            continue
        print(f"| {r['cells_per_snapshot']:,} | {r['seconds']:.1f} | {r['peak_rss_mb']:,.0f} | "
              f"{r['rss_before_eval_mb']:,.0f} | {r['sb_path']} | "
              f"{r['exact_path']} | {r['sinkhorn_iterations']} | {r['w1_cells']:,} | "
              f"{r['w1_bridge']:.3f} / {r['w1_exact_ot']:.3f} / {r['w1_random']:.3f} / {r['w1_prev']:.3f} / "
              f"{r['w1_expr_pcs']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
