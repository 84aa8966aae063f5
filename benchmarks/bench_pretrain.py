"""Pretraining throughput of each torch method against the machine's dense matmul rate.

For each method and gene count D (2,000 and 19,331), one optimiser step (forward, backward, AdamW) runs
on synthetic log1p-like data. Its matmul work is read off the model itself (a hook on every nn.Linear
records the rows, in and out features of each call): forward 2·R·in·out FLOPs, backward the same for
the weight gradient and, where the input needs a gradient, for the input gradient. The "ideal" step
time is the sum of torch.mm timings of exactly those products (same shapes, same layouts), measured in
the same run, interleaved with the steps (best of ``--rounds`` for both: on a shared machine other load
only adds time); achieved / ideal = ideal time / measured step time. Everything that is not a dense
matmul (masks, SIGReg trig, losses, the optimiser, allocations) shows up as the gap.

    python benchmarks/bench_pretrain.py [--batch-size 256] [--rounds 4] [--genes 2000 19331]

Prints a markdown table and writes benchmarks/results/pretrain.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from scjepa.methods import FAMILIES
from scjepa.methods.engine import make_optimizer, use_caching_malloc

METHODS = ("scjepa", "mae", "barlow_twins", "supervised")


def synthetic_batch(n: int, d: int, seed: int = 0) -> dict:
    """log1p-normalised-looking expression: ~10 % non-zeros, values up to ~6."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g)
    x = torch.where(x < 0.1, torch.log1p(x * 4000), torch.zeros(()))
    return {"x": x.float(), "y": torch.randint(0, 10, (n,), generator=g)}


class _Supervised10:
    """A loader stand-in so the supervised method knows its classes."""

    classes = [str(i) for i in range(10)]
    class_counts = [1] * 10


def build(family: str, n_genes: int):
    method = FAMILIES[family](device="cpu")
    if family == "supervised":
        method.prepare(_Supervised10())
    torch.manual_seed(0)
    return method.build_module(n_genes)


def record_linears(module: nn.Module, step) -> list[tuple[int, int, int, bool]]:
    """(rows, in, out, input_requires_grad) of every nn.Linear call during ``step()``."""
    calls = []

    def hook(mod, inp, out):
        x = inp[0]
        calls.append((x.numel() // x.shape[-1], mod.in_features, mod.out_features, x.requires_grad))

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Linear)]
    try:
        step()
    finally:
        for h in handles:
            h.remove()
    return calls


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def matmul_products(calls) -> list[tuple]:
    """The (kind, m, k, n) products of one step: forward, weight gradient, input gradient."""
    out = []
    for rows, fin, fout, needs_in_grad in calls:
        out += [("fwd", rows, fin, fout), ("wgrad", fout, rows, fin)]
        if needs_in_grad:
            out.append(("igrad", rows, fout, fin))
    return out


def _mm(kind: str, m: int, k: int, n: int):
    """torch.mm with the operand layouts autograd uses for nn.Linear."""
    if kind == "fwd":  # x (R, in) @ W.T, W (out, in)
        a, b = torch.randn(m, k), torch.randn(n, k).t()
    elif kind == "wgrad":  # grad_out.T (out, R) @ x (R, in)
        a, b = torch.randn(k, m).t(), torch.randn(k, n)
    else:  # grad_out (R, out) @ W (out, in)
        a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    return lambda: torch.mm(a, b, out=out)


def bench_one(family: str, n_genes: int, batch_size: int, rounds: int) -> dict:
    """Step time and ideal matmul time, interleaved round by round; the best round of each.

    On a shared machine, other load only ever adds time, so the minimum over rounds is the estimate
    least disturbed by it, and interleaving exposes both measurements to the same conditions.
    """
    module = build(family, n_genes).train()
    opt = make_optimizer(module, lr=1e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    batch = synthetic_batch(batch_size, n_genes)

    def step():
        terms = module.training_step(batch, gen)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()

    products = matmul_products(record_linears(module, step))  # also the warm-up step
    flops = sum(2.0 * m * k * n for _, m, k, n in products)
    mms = {p: _mm(*p) for p in set(products)}
    for f in mms.values():
        f()  # warm-up
    step_ts, ideal_ts = [], []
    for _ in range(rounds):
        step_ts.append(_time(step))
        times = {p: _time(f) for p, f in mms.items()}
        ideal_ts.append(sum(times[p] for p in products))
    step_s, ideal_s = min(step_ts), min(ideal_ts)
    return {
        "method": family, "n_genes": n_genes, "batch_size": batch_size, "step_s": step_s,
        "step_s_median": statistics.median(step_ts), "cells_per_s": batch_size / step_s,
        "gflop_per_step": flops / 1e9, "achieved_gflops": flops / step_s / 1e9, "mm_gflops": flops / ideal_s / 1e9,
        "ideal_step_s": ideal_s, "achieved_over_ideal": ideal_s / step_s,
    }


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=4, help="timed steps (each followed by its matmuls)")
    ap.add_argument("--genes", type=int, nargs="+", default=[2000, 19331])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--no-malloc-tweak", action="store_true", help="keep glibc's default mmap behaviour")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pretrain.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_malloc_tweak:
        use_caching_malloc()
    rows = []
    for d in args.genes:
        for fam in args.methods:
            r = bench_one(fam, d, args.batch_size, args.rounds)
            rows.append(r)
            print(f"  {fam} D={d}: {r['cells_per_s']:.0f} cells/s, {r['achieved_over_ideal']:.0%} of mm", flush=True)
    print()
    print("| method | D | batch | step (s) | cells/s | GFLOP/step | achieved GFLOP/s | mm GFLOP/s | achieved/ideal |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['n_genes']} | {r['batch_size']} | {r['step_s']:.3f} | {r['cells_per_s']:.0f} | "
              f"{r['gflop_per_step']:.1f} | {r['achieved_gflops']:.1f} | {r['mm_gflops']:.1f} | "
              f"{r['achieved_over_ideal']:.0%} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
            platform.machine(), "device": "cpu", "load_avg_at_start": os.getloadavg(),
            "malloc_tweak": not args.no_malloc_tweak, "rounds": args.rounds, "timing": "best of rounds"}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    os.replace(tmp, out)
    return rows


if __name__ == "__main__":
    main()
