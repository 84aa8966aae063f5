"""The benchmark's entry point: one method's latent on one dataset -> metrics, config, figure samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from scjepa.contracts import EMBEDDING_KEY
from scjepa.errors import InputError
from scjepa.tasks.bridge.config import BridgeConfig
from scjepa.tasks.bridge.couplings import bridge_coupling
from scjepa.tasks.bridge.fates import fate_readout
from scjepa.tasks.bridge.perturbation import perturbation_transport
from scjepa.tasks.bridge.sampling import sample_paths
from scjepa.tasks.bridge.spaces import reference_space
from scjepa.tasks.bridge.timecourse import TimeCourse, leave_one_timepoint_out


@dataclass
class BridgeResult:
    metrics: dict[str, float]
    config: dict[str, Any]
    samples: dict[str, np.ndarray]
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why the data has no truth for it


def _subsample_groups(labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Indices keeping at most ``cap`` cells of each label (seeded, sorted)."""
    rng = np.random.default_rng(seed)
    keep = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        if idx.size > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        keep.append(idx)
    return np.sort(np.concatenate(keep))


def _column(obs, key: str, *, path=None, required: bool = True, allow_na: bool = False):
    if key not in obs:
        if required:
            raise InputError(f"obs has no column '{key}'; columns: {list(obs.columns)}", path=path, column=key)
        return None
    col = obs[key]
    if allow_na:
        return np.asarray(col.astype(object).where(col.notna(), None))
    if col.isna().any():
        raise InputError(f"{int(col.isna().sum())} cells have no value", path=path, column=key)
    return np.asarray(col)


def score_timecourse(Z: np.ndarray, X, obs, cfg: BridgeConfig, *, path=None) -> BridgeResult:
    """Leave-one-timepoint-out + fates + figure paths on one time course (Z: (n, d) latent, X: log1p expression)."""
    t = _column(obs, cfg.time_key, path=path).astype(np.float64)
    if not np.all(np.isfinite(t)):
        raise InputError("time values must be finite numbers", path=path, column=cfg.time_key)
    sel = _subsample_groups(t, cfg.max_cells_per_time, cfg.subsample_seed)
    times = np.unique(t[sel])
    counts = {float(v): int((t[sel] == v).sum()) for v in times}
    small = [v for v, n in counts.items() if n < 2]
    if small:
        raise InputError(f"time points {small} have fewer than 2 cells", path=path, column=cfg.time_key)
    if len(times) < 3:
        raise InputError(f"needs >= 3 time points for leave-one-out, found {len(times)}", path=path, column=cfg.time_key)
    R_all = reference_space(X[sel], cfg.reference_dims, cfg.whiten, cfg.subsample_seed)
    Zs, ts = np.asarray(Z, np.float64)[sel], t[sel]
    snaps = [np.flatnonzero(ts == v) for v in times]
    tau = np.arange(len(times), dtype=np.float64) if cfg.time_parameter == "index" else times.astype(np.float64)
    tc = TimeCourse([Zs[s] for s in snaps], [R_all[s] for s in snaps], tau, cfg)
    metrics, details = leave_one_timepoint_out(tc)

    pooled = details["pooled_validation"]
    c_fate = min(pooled, key=pooled.get) if pooled else cfg.sigma_fallback
    fate = _column(obs, cfg.fate_key, path=path, required=False, allow_na=True)
    unavailable: dict[str, str] = {}
    if fate is not None:
        last = np.asarray(fate)[sel][snaps[-1]]
        if any(v is None for v in last):
            raise InputError("cells of the last time point need a fate (the terminal classes)", path=path,
                             column=cfg.fate_key)
        fm, couplings = fate_readout(tc, [np.asarray(fate)[sel][s] for s in snaps], c_fate)
        metrics.update(fm)
    else:
        couplings = [tc.coupling(k, k + 1, c_fate) for k in range(tc.K - 1)]
        why = f"the dataset has no '{cfg.fate_key}' column"
        unavailable = {name: why for name in FATE_METRICS}

    rng = np.random.default_rng([cfg.subsample_seed, 99])
    sig_abs = c_fate * tc.scale["latent"]
    paths, path_off = sample_paths(tc.Z, couplings, [sig_abs] * (tc.K - 1), np.diff(tau), rng, cfg.n_paths, cfg.path_steps)
    # stored path times in the data's own time units
    path_time = np.interp(path_off + tau[0], tau, times)
    fig_idx = [np.sort(rng.choice(len(z), min(len(z), cfg.figure_cells_per_time), replace=False)) for z in tc.Z]
    samples = {
        "kind": np.array("timecourse"),
        "points": np.concatenate([z[i] for z, i in zip(tc.Z, fig_idx)]).astype(np.float32),
        "ref_points": np.concatenate([r[i] for r, i in zip(tc.R, fig_idx)]).astype(np.float32),
        "point_time": np.concatenate([np.full(len(i), v) for i, v in zip(fig_idx, times)]),
        "paths": paths.astype(np.float32),
        "path_time": path_time,
        "times": times.astype(np.float64),
        "sigma": np.array(float(c_fate)),
        "sigma_abs": np.array(float(sig_abs)),
        "w1_bridge_rel_best_snapshot": np.array(metrics.get("w1_bridge_rel_best_snapshot", np.nan)),
    }
    samples.update(_heldout_samples(tc, details, times, cfg, rng))
    config = cfg.as_dict()
    config.update(
        kind="timecourse", n_cells_used=int(sel.size), cells_per_time=counts,
        latent_dim=int(Z.shape[1]), latent_scale=details["latent_scale"], ref_scale=details["ref_scale"],
        sigma_selection={str(k): v for k, v in details["validation"].items()},
        sigma_how={str(k): r["how"] for k, r in details["per_time"].items()},
        sigma_chosen={str(k): r["c"] for k, r in details["per_time"].items()},
        sigma_chosen_expr_pcs={str(k): r["c_expr_pcs"] for k, r in details["per_time"].items()},
        sigma_fate=float(c_fate),
    )
    return BridgeResult(metrics, config, samples, unavailable)


#: fate metrics a time course without a fate column cannot have (marked "no truth" in the tables)
FATE_METRICS = ("fate_accuracy", "fate_chance", "fate_brier", "fate_brier_chance", "fate_logloss",
                "fate_logloss_chance")
_BASELINES = ("prev", "next", "random", "exact_ot")


def _heldout_samples(tc: TimeCourse, details, times, cfg: BridgeConfig, rng) -> dict[str, np.ndarray]:
    """Reference-space points of each held-out time for Fig. 5: the truth, the bridge sample (first seed,
    chosen σ) and the prediction of the baseline with the lowest mean W1 at that time."""
    seed = cfg.seeds[0]
    out: dict[str, list] = {"heldout_truth": [], "heldout_truth_time": [], "heldout_bridge": [],
                            "heldout_bridge_time": [], "heldout_baseline": [], "heldout_baseline_time": []}
    names, w1s = [], []
    for k, rec in sorted(details["per_time"].items()):
        a, b = k - 1, k + 1
        best = min(_BASELINES, key=lambda e: float(np.mean(rec[e])))
        names.append(best)
        w1s.append([float(np.mean(rec["bridge"])), float(np.mean(rec[best]))])
        bridge = tc.predict(a, k, b, rec["c"], seed, exclude=k)["ref"]
        if best in ("prev", "next"):
            base = tc.R[a if best == "prev" else b]
        else:
            base = tc.predict(a, k, b, None if best == "random" else 0.0, seed)["ref"]
        for name, pts in (("truth", tc.R[k]), ("bridge", bridge), ("baseline", base)):
            idx = rng.choice(len(pts), min(len(pts), cfg.figure_cells_per_time), replace=False)
            out[f"heldout_{name}"].append(pts[idx])
            out[f"heldout_{name}_time"].append(np.full(idx.size, times[k]))
    res = {key: np.concatenate(v).astype(np.float32 if not key.endswith("_time") else np.float64)
           for key, v in out.items()}
    res["heldout_times"] = np.asarray([times[k] for k in sorted(details["per_time"])], np.float64)
    res["heldout_baseline_name"] = np.array(names)
    res["heldout_w1"] = np.asarray(w1s, np.float64)  # (n_heldout, 2): bridge, best baseline
    res["heldout_sigma"] = np.asarray([r["c"] for _, r in sorted(details["per_time"].items())], np.float64)
    return res


def score_perturbation(Z: np.ndarray, X, obs, cfg: BridgeConfig, *, path=None, genes: np.ndarray | None = None
                       ) -> BridgeResult:
    """Control → perturbed transport on one perturbation dataset (Z latent, X log1p expression)."""
    cond = _column(obs, cfg.condition_key, path=path).astype(str)
    ctype = _column(obs, cfg.cell_type_key, path=path, required=False)
    sel = _subsample_groups(cond, cfg.max_cells_per_time, cfg.subsample_seed)
    Xs = X[sel]
    if genes is not None:
        Xs = Xs[:, genes]
    import scipy.sparse as sp

    Xs = Xs.tocsr() if sp.issparse(Xs) else np.asarray(Xs)
    Zs = np.asarray(Z, np.float64)[sel]
    R = reference_space(Xs, cfg.reference_dims, cfg.whiten, cfg.subsample_seed)
    m, details = perturbation_transport(Zs, Xs, cond[sel], None if ctype is None else np.asarray(ctype)[sel], cfg, R)
    # figure: control and every condition, paths control -> first condition
    rng = np.random.default_rng([cfg.subsample_seed, 98])
    cs = cond[sel]
    labels = [cfg.control] + sorted(c for c in set(cs) if c != cfg.control)
    pts, grp = [], []
    for g, lab in enumerate(labels):
        idx = np.flatnonzero(cs == lab)
        idx = rng.choice(idx, min(idx.size, cfg.figure_cells_per_time), replace=False)
        pts.append(Zs[idx])
        grp.append(np.full(idx.size, float(g)))
    c0 = float(np.median(details["sigma_per_condition"].get(labels[1], [0.0]))) if len(labels) > 1 else 0.0
    ctrl, pert = Zs[cs == cfg.control], Zs[cs == labels[1]]
    scale = details["latent_scale"]
    cp = bridge_coupling(ctrl, pert, c0 * scale, 1.0, **cfg.coupling_kwargs())
    paths, off = sample_paths([ctrl, pert], [cp], [c0 * scale], [1.0], rng, cfg.n_paths, cfg.path_steps)
    samples = {
        "kind": np.array("perturbation"),
        "points": np.concatenate(pts).astype(np.float32),
        "point_time": np.concatenate(grp),
        "group_names": np.array(labels),
        "paths": paths.astype(np.float32),
        "path_time": off,
        "times": np.arange(len(labels), dtype=np.float64),
        "sigma": np.array(c0),
        "sigma_abs": np.array(c0 * scale),
    }
    config = cfg.as_dict()
    config.update(kind="perturbation", n_cells_used=int(sel.size), latent_dim=int(Z.shape[1]),
                  n_genes_scored=int(Xs.shape[1]), sigma_per_condition=details["sigma_per_condition"],
                  latent_scale=scale)
    return BridgeResult(m, config, samples)


def score_bridge(emb, data, kind: str, config: Mapping[str, Any] | BridgeConfig | None = None, *,
                 data_path=None) -> BridgeResult:
    """The bridge benchmark of one method on one dataset.

    ``emb``: the embedding as :func:`scjepa.contracts.read_embedding` returns it, read with the
    processed dataset's obs names (so its rows are that dataset's cells, in order, and finite: the
    one check of the embedding); ``data``: the processed AnnData (X = log1p expression; obs 'time'
    and 'fate' for a time course, 'condition' and 'cell_type' for a perturbation screen); ``kind``:
    "timecourse" or "perturbation".
    """
    cfg = config if isinstance(config, BridgeConfig) else BridgeConfig.from_dict(config)
    Z = np.asarray(emb.obsm[EMBEDDING_KEY], np.float64)
    if kind == "timecourse":
        return score_timecourse(Z, data.X, data.obs, cfg, path=data_path)
    if kind == "perturbation":
        genes = None
        if "present" in data.var:
            genes = np.flatnonzero(np.asarray(data.var["present"], bool))
            if genes.size == 0:
                genes = None
        return score_perturbation(Z, data.X, data.obs, cfg, path=data_path, genes=genes)
    raise InputError(f"kind must be 'timecourse' or 'perturbation', got {kind!r}", key="kind")


def write_samples(samples: Mapping[str, np.ndarray], dest) -> None:
    """Write the figure samples as a compressed .npz, atomically (no pickled objects)."""
    from scjepa.io import atomic_path

    arrays = {k: np.asarray(v) for k, v in samples.items()}
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(f"sample array '{k}' has dtype object; store str or numbers")
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def empty_samples(kind: str, status: str, reason: str = "") -> dict[str, np.ndarray]:
    """Samples file of a job that produced no bridge (status 'n/a' or 'failed'), for the figure rule."""
    return {"kind": np.array(kind), "status": np.array(status), "reason": np.array(reason)}
