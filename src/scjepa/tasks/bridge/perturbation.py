"""Perturbation screens: control -> perturbed transport in a latent, scored in gene space (CellOT's metrics)."""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from scjepa.errors import InputError, SolverError
from scjepa.tasks.bridge.config import BridgeConfig
from scjepa.tasks.bridge.couplings import bridge_coupling
from scjepa.tasks.bridge.spaces import latent_scale, mmd_rbf, w2

log = logging.getLogger(__name__)


def _r2(x: np.ndarray, y: np.ndarray) -> float:
    """Squared Pearson correlation (0 when either side is constant)."""
    x = np.asarray(x, np.float64) - np.mean(x)
    y = np.asarray(y, np.float64) - np.mean(y)
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    return float(((x * y).sum() / den) ** 2) if den > 0 else 0.0


def _group_means(X, groups: Sequence[np.ndarray]) -> np.ndarray:
    """Means of X's rows over each index set: (len(groups), n_genes)."""
    return np.vstack([np.asarray(X[g].mean(axis=0)).ravel() for g in groups])


def _weighted_means(W: np.ndarray, X) -> np.ndarray:
    """W (k, n) row-stochastic weights over X's rows -> (k, n_genes); X dense or sparse."""
    out = X.T @ W.T  # (genes, k); sparse.T @ dense keeps memory O(genes·k)
    return np.asarray(out).T


def _mean_metrics(pred: np.ndarray, truth: np.ndarray, weights: np.ndarray, genes: np.ndarray | None) -> tuple[float, float]:
    """(r², l2) of mean vectors, averaged over groups with ``weights``; on ``genes`` if given."""
    if genes is not None:
        pred, truth = pred[:, genes], truth[:, genes]
    r2 = np.array([_r2(p, t) for p, t in zip(pred, truth)])
    l2 = np.linalg.norm(pred - truth, axis=1)
    w = np.asarray(weights, np.float64) / np.sum(weights)
    return float((w * r2).sum()), float((w * l2).sum())


def perturbation_transport(Z: np.ndarray, X, condition: np.ndarray, cell_type: np.ndarray | None,
                           cfg: BridgeConfig, R: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Control → perturbed transport in the latent, scored in gene space with CellOT's metrics.

    Z (n, d) latent, X (n, genes) log1p expression, ``condition`` / ``cell_type`` (n,) labels.
    Per condition and seed: fit on halves A (markers, mean shift, σ), couple ctrl_B with pert_A in
    the latent, predict ctrl_B's expression by barycentric projection, compare with pert_B; against
    the identity, mean-shift and observed baselines (protocol and metrics: docs/BRIDGE.md,
    "Perturbation"). With ``R`` (n, d) reference-space coordinates, also CellOT's distribution
    readouts there: W2 and RBF-MMD between predicted and held-out perturbed cells, per cell type
    (``*_ct``) and for the population; the bridge's prediction for a ctrl_B cell is one pert_A cell drawn
    from its row of the plan. Returns (metrics averaged over conditions and seeds, details).
    """
    condition = np.asarray(condition).astype(str)
    ctrl_all = np.flatnonzero(condition == cfg.control)
    if ctrl_all.size < 4:
        raise InputError(f"needs >= 4 control cells labelled '{cfg.control}', found {ctrl_all.size}",
                         column=cfg.condition_key)
    conds = [c for c in dict.fromkeys(condition) if c != cfg.control]
    if not conds:
        raise InputError("no perturbed condition besides the control", column=cfg.condition_key)
    types = None if cell_type is None else np.asarray(cell_type).astype(str)
    scale = latent_scale(Z)
    k_top = int(min(cfg.top_genes, X.shape[1]))
    tag = f"top{cfg.top_genes}"
    rows: list[dict[str, float]] = []
    row_seeds: list[int] = []
    chosen: dict[str, list[float]] = {}
    for cond in conds:
        pert_all = np.flatnonzero(condition == cond)
        if pert_all.size < 4:
            log.warning("condition %s has %d cells; skipped", cond, pert_all.size)
            continue
        for seed in cfg.seeds:
            rng = np.random.default_rng([int(seed), len(cond), sum(map(ord, cond))])
            cA, cB = _halves(ctrl_all, rng)
            pA, pB = _halves(pert_all, rng)
            mu_cA, mu_pA = _group_means(X, [cA])[0], _group_means(X, [pA])[0]
            markers = np.argsort(-np.abs(mu_pA - mu_cA), kind="stable")[:k_top]
            shift = mu_pA - mu_cA
            c = _select_sigma_perturbation(Z, X, cA, pA, types, cfg, scale, rng)
            chosen.setdefault(cond, []).append(c)
            cp = bridge_coupling(Z[cB], Z[pA], c * scale, 1.0, seed=int(seed), **cfg.coupling_kwargs())
            # groups: the population, then cell types present in ctrl_B, pert_B and pert_A
            groups = [("all", np.arange(cB.size), np.arange(pB.size), np.arange(pA.size))]
            if types is not None:
                for t in sorted(set(types[cB])):
                    gi, gt, go = (np.flatnonzero(types[idx] == t) for idx in (cB, pB, pA))
                    if min(gi.size, gt.size, go.size) >= cfg.min_cells_per_type:
                        groups.append((t, gi, gt, go))
            W = np.zeros((len(groups), cB.size))
            for g, (_, gi, _, _) in enumerate(groups):
                W[g, gi] = 1.0 / gi.size
            preds = {
                "ot": _weighted_means(cp.push_weights(W), X[pA]),
                "identity": _group_means(X[cB], [gi for _, gi, _, _ in groups]),
                "observed": _group_means(X[pA], [go for *_, go in groups]),
            }
            preds["meanshift"] = preds["identity"] + shift[None, :]
            truth = _group_means(X[pB], [gt for _, _, gt, _ in groups])
            wts = np.array([gt.size for _, _, gt, _ in groups], np.float64)
            row: dict[str, float] = {}
            for name, pred in preds.items():
                suffix = "" if name == "ot" else f"_{name}"
                for level, sl in (("", slice(0, 1)), ("_ct", slice(1, None))):
                    if pred[sl].shape[0] == 0:
                        continue
                    r2, l2 = _mean_metrics(pred[sl], truth[sl], wts[sl], None)
                    r2m, l2m = _mean_metrics(pred[sl], truth[sl], wts[sl], markers)
                    row[f"r2_means{level}{suffix}"], row[f"l2_means{level}{suffix}"] = r2, l2
                    row[f"r2_means{level}_{tag}{suffix}"], row[f"l2_means{level}_{tag}{suffix}"] = r2m, l2m
            if R is not None:
                rng_s = np.random.default_rng([int(seed), 5, sum(map(ord, cond))])
                shift_r = R[pA].mean(axis=0) - R[cA].mean(axis=0)
                cells = {"ot": R[pA][cp.sample_targets(rng_s)], "identity": R[cB], "meanshift": R[cB] + shift_r}
                for name, pred in list(cells.items()) + [("observed", R[pA])]:
                    suffix = "" if name == "ot" else f"_{name}"
                    per = []
                    for g, (_, gi, gt, go) in enumerate(groups):
                        p_ = pred[go] if name == "observed" else pred[gi]
                        t_ = R[pB][gt]
                        per.append((w2(p_, t_), mmd_rbf(p_, t_)))
                    row[f"w2_ref{suffix}"], row[f"mmd_ref{suffix}"] = per[0]
                    if len(per) > 1:
                        wt = wts[1:] / wts[1:].sum()
                        row[f"w2_ref_ct{suffix}"] = float(sum(w * v[0] for w, v in zip(wt, per[1:])))
                        row[f"mmd_ref_ct{suffix}"] = float(sum(w * v[1] for w, v in zip(wt, per[1:])))
            row["sigma"] = c
            rows.append(row)
            row_seeds.append(int(seed))
            log.info("condition %s seed %d: sigma=%g r2_top=%.3f (identity %.3f, meanshift %.3f) l2_ct=%s",
                     cond, seed, c, row[f"r2_means_{tag}"], row[f"r2_means_{tag}_identity"],
                     row[f"r2_means_{tag}_meanshift"], row.get("l2_means_ct"))
    if not rows:
        raise InputError("no perturbed condition has enough cells", column=cfg.condition_key)
    keys = sorted(set().union(*rows))
    m = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    for k in keys:  # sd over seeds of the condition-averaged value
        per_seed = [np.mean([r[k] for r, s in zip(rows, row_seeds) if s == seed and k in r]) for seed in cfg.seeds
                    if any(s == seed and k in r for r, s in zip(rows, row_seeds))]
        m[k + "_sd"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0
    m["n_conditions"] = float(len(chosen))
    return m, {"sigma_per_condition": chosen, "latent_scale": scale, "markers": k_top}


def _halves(idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    p = rng.permutation(idx)
    h = p.size // 2
    return np.sort(p[:h]), np.sort(p[h:])


def _select_sigma_perturbation(Z, X, cA, pA, types, cfg: BridgeConfig, scale: float, rng) -> float:
    """σ for control → perturbed on the fitting half only: couple ctrl_A with pert_A1, score per-type means on pert_A2."""
    grid = sorted(set(cfg.sigmas))
    if len(grid) == 1:
        return grid[0]
    if types is None:
        return cfg.sigma_fallback
    p1, p2 = _halves(pA, rng)
    groups = []
    for t in sorted(set(types[cA])):
        gi, gt, go = np.flatnonzero(types[cA] == t), np.flatnonzero(types[p2] == t), np.flatnonzero(types[p1] == t)
        if min(gi.size, gt.size, go.size) >= cfg.min_cells_per_type:
            groups.append((gi, gt))
    if not groups:
        return cfg.sigma_fallback
    W = np.zeros((len(groups), cA.size))
    for g, (gi, _) in enumerate(groups):
        W[g, gi] = 1.0 / gi.size
    truth = _group_means(X[p2], [gt for _, gt in groups])
    wts = np.array([gt.size for _, gt in groups], np.float64)
    best, best_c = math.inf, cfg.sigma_fallback
    for c in grid:
        try:
            cp = bridge_coupling(Z[cA], Z[p1], c * scale, 1.0, **cfg.coupling_kwargs())
        except SolverError as exc:
            log.warning("perturbation sigma %g failed on validation: %s", c, exc)
            continue
        _, l2 = _mean_metrics(_weighted_means(cp.push_weights(W), X[p1]), truth, wts, None)
        if l2 < best:
            best, best_c = l2, c
    return float(best_c)
