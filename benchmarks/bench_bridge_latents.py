"""σ chosen and W1 per latent on the synthetic time course: the generator's true state, expression PCA, noise.

    .venv/bin/python benchmarks/bench_bridge_latents.py [--cells 1800] [--genes 500] [--cap 300]

Scores one synthetic branching time course (``scjepa.data.synthetic``, kind ``timecourse``) with
``score_timecourse`` for three latents: ``obsm['X_true']`` (the generator's low-dimensional state: a positive
control), 16 PCs of log-normalised expression (close to the reference space) and i.i.d. Gaussian noise (a
negative control). Prints σ per held-out time, absolute W1 of the bridge and of every baseline, the ratio to the
best snapshot copy, and the fate scores; writes ``benchmarks/results/bridge_latents.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=1800)
    ap.add_argument("--genes", type=int, default=500)
    ap.add_argument("--cap", type=int, default=300, help="max_cells_per_time")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bridge_latents.json")
    args = ap.parse_args(argv)
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    from scjepa.data import synthetic
    from scjepa.tasks import bridge as B

    ad = synthetic.generate("timecourse", args.cells, n_genes=args.genes, seed=0)
    X = sp.csr_matrix(ad.X, dtype=np.float64)
    X = sp.csr_matrix(X.multiply(1e4 / np.maximum(np.asarray(X.sum(axis=1)), 1)))
    X.data = np.log1p(X.data)
    latents = {
        "true_state": np.asarray(ad.obsm["X_true"], np.float64),
        "expression_pca16": PCA(16, random_state=0).fit_transform(X.toarray()),
        "noise16": np.random.default_rng(0).standard_normal((ad.n_obs, 16)),
    }
    cfg = B.BridgeConfig.from_dict({"seeds": args.seeds, "max_cells_per_time": args.cap})
    rows = {}
    for name, Z in latents.items():
        t0 = time.perf_counter()
        res = B.score_timecourse(Z, X, ad.obs, cfg)
        m = res.metrics
        rows[name] = {k: v for k, v in m.items()} | {"seconds": round(time.perf_counter() - t0, 1),
                                                      "sigma_chosen": res.config["sigma_chosen"]}
        print(f"{name}: sigma per held-out time {res.config['sigma_chosen']} ({rows[name]['seconds']} s)")
        print("  W1 bridge %.3f±%.3f exact OT %.3f random %.3f prev %.3f next %.3f expr PCs %.3f (σ %.3g) "
              "| /best snapshot %.3f | fate acc %.3f (chance %.3f) Brier %.3f (chance %.3f)" % (
                  m["w1_bridge"], m["w1_bridge_sd"], m["w1_exact_ot"], m["w1_random"], m["w1_prev"], m["w1_next"],
                  m["w1_expr_pcs"], m["sigma_expr_pcs"], m["w1_bridge_rel_best_snapshot"], m["fate_accuracy"],
                  m["fate_chance"], m["fate_brier"], m["fate_brier_chance"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cells": args.cells, "genes": args.genes, "cap": args.cap, "rows": rows},
                                   indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
