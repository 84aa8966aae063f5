"""Time courses: snapshots in a latent and the reference space, and leave-one-timepoint-out."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from scjepa.errors import InputError, SolverError
from scjepa.tasks.bridge.config import BridgeConfig
from scjepa.tasks.bridge.couplings import Coupling, bridge_coupling
from scjepa.tasks.bridge.sampling import bridge_noise_sd
from scjepa.tasks.bridge.spaces import energy_distance, latent_scale, noise_factor, w1

log = logging.getLogger(__name__)

#: the estimators of a held-out snapshot, each scored as absolute W1 in the reference space
ESTIMATORS = ("bridge", "exact_ot", "random", "prev", "next", "expr_pcs")


class TimeCourse:
    """Snapshots of one time course in a latent (Z_k) and the reference space (R_k), with caches.

    ``tau``: time parameter of each snapshot (index or real time). Couplings are cached per
    (space, a, b, c), c being σ in units of that space's scale ŝ. ``space="ref"`` treats the
    reference space itself as the latent (the "expression PCs" row).
    """

    def __init__(self, Z: Sequence[np.ndarray], R: Sequence[np.ndarray], tau: Sequence[float], cfg: BridgeConfig):
        if len(Z) != len(R) or len(Z) != len(tau):
            raise ValueError("Z, R and tau need one entry per snapshot")
        self.Z = [np.asarray(z, np.float64) for z in Z]
        self.R = [np.asarray(r, np.float64) for r in R]
        self.tau = np.asarray(tau, np.float64)
        self.K = len(self.Z)
        self.cfg = cfg
        self.scale = {"latent": latent_scale(np.concatenate(self.Z)), "ref": latent_scale(np.concatenate(self.R))}
        self._couplings: dict = {}
        self._truth: dict = {}
        self._scores: dict = {}
        self._maps: dict = {}

    def points(self, space: str) -> list[np.ndarray]:
        return self.Z if space == "latent" else self.R

    def coupling(self, a: int, b: int, c: float, space: str = "latent") -> Coupling:
        key = (space, a, b, float(c))
        if key not in self._couplings:
            X = self.points(space)
            cfg = self.cfg
            larger = sorted(k[3] for k in self._couplings if k[:3] == key[:3] and k[3] > c)
            warm = self._couplings[(space, a, b, larger[0])] if larger and c > 0 else None
            self._couplings[key] = bridge_coupling(
                X[a], X[b], c * self.scale[space], self.tau[b] - self.tau[a],
                seed=cfg.subsample_seed, warmstart=warm, **cfg.coupling_kwargs(),
            )
            info = {k: v for k, v in self._couplings[key].info.items() if k != "potentials"}
            log.debug("coupling %s %d->%d c=%g: %s", space, a, b, c, info)
        return self._couplings[key]

    def noise_map(self, space: str, exclude: int | None) -> np.ndarray:
        """L (d_ref, d_ref): latent bridge noise of unit sd per coordinate, carried into the reference space.

        The least-squares linear map B from the (centred) latent to the (centred) reference space is
        fitted on every snapshot but ``exclude`` (the held-out time); latent noise σξ maps to σBξ,
        distributed N(0, σ²BBᵀ), drawn as σ·L·η with L = (BBᵀ)^½ (so rotating, scaling or padding
        the latent leaves L, and every draw, unchanged). In the reference space itself L = I.
        """
        key = (space, exclude)
        if key not in self._maps:
            if space == "ref":
                L = np.eye(self.R[0].shape[1])
            else:
                keep = [m for m in range(self.K) if m != exclude]
                L = noise_factor(np.concatenate([self.Z[m] for m in keep]), np.concatenate([self.R[m] for m in keep]))
            self._maps[key] = L
        return self._maps[key]

    def latent_basis(self, space: str) -> np.ndarray:
        """(d, r) orthonormal principal axes of the space's non-constant directions, signs fixed by the data.

        The latent bridge noise is isotropic within them (σ per axis), so constant padding dimensions get
        none and a rotated latent gets the same draws, rotated.
        """
        key = ("basis", space)
        if key not in self._maps:
            X = np.concatenate(self.points(space))
            Xc = X - X.mean(axis=0)
            _, sv, vt = np.linalg.svd(Xc, full_matrices=False)
            V = vt[sv > sv[0] * 1e-10].T
            scores = Xc @ V
            sign = np.sign(np.sum(scores**3, axis=0))  # skewness sign: a rotation-free convention
            self._maps[key] = V * np.where(sign == 0, 1.0, sign)
        return self._maps[key]

    def fraction(self, a: int, k: int, b: int) -> float:
        return float((self.tau[k] - self.tau[a]) / (self.tau[b] - self.tau[a]))

    def predict(self, a: int, k: int, b: int, c: float | None, seed: int, *, space: str = "latent",
                exclude: int | None = None) -> dict[str, np.ndarray]:
        """Predict snapshot k from a and b: ``{"ref": reference-space prediction, "latent": bridge sample}``.

        Pairs (i, j) are drawn from the coupling in ``space`` (``c=None``: the independent coupling);
        the reference prediction is (1 − s) r_i + s r_j plus the bridge noise carried by
        :meth:`noise_map` (fitted without ``exclude``); the latent one is the bridge sample itself.
        """
        s, dt = self.fraction(a, k, b), self.tau[b] - self.tau[a]
        rng = np.random.default_rng([int(seed), a, k, b])
        X = self.points(space)
        if c is None:  # independent coupling: j uniform for every i, straight line, no noise
            i, j = np.arange(len(X[a])), rng.integers(0, len(X[b]), size=len(X[a]))
            sd = 0.0
        else:
            i, j = np.arange(len(X[a])), self.coupling(a, b, c, space).sample_targets(rng)
            sd = bridge_noise_sd(c * self.scale[space], dt, s)
        out = {"ref": (1.0 - s) * self.R[a][i] + s * self.R[b][j]}
        xs = (1.0 - s) * X[a][i] + s * X[b][j]
        if sd > 0:
            eta = rng.standard_normal(out["ref"].shape)
            out["ref"] = out["ref"] + sd * eta @ self.noise_map(space, exclude).T
            V = self.latent_basis(space)
            xs = xs + sd * rng.standard_normal((len(xs), V.shape[1])) @ V.T
        out["latent"] = xs
        return out

    def score(self, a: int, k: int, b: int, c: float | None, seed: int, *, space: str = "ref",
              coupling_space: str = "latent", exclude: int | None = None, stat: str = "w1") -> float:
        """W1 (or ``stat="energy"``: the energy distance) in ``space`` of the prediction of k from (a, b)
        with a coupling in ``coupling_space`` (memoised)."""
        excl = exclude if (c is not None and c > 0) else None  # only the noise map depends on it
        key = (a, k, b, c, int(seed), space, coupling_space, excl, stat)
        if key not in self._scores:
            pred = self.predict(a, k, b, c, seed, space=coupling_space, exclude=excl)[space]
            if stat == "energy":
                self._scores[key] = self.energy_to(pred, k, space, seed)
            else:
                self._scores[key] = self.w1_to(pred, k, space, seed)
        return self._scores[key]

    def snapshot_score(self, src: int, k: int, seed: int, space: str = "ref") -> float:
        """W1 of snapshot ``src`` copied as the prediction of k (the previous / next snapshot baseline)."""
        det = self.cfg.max_eval_cells is None  # no subsampling: one value for every seed
        key = ("snapshot", src, k, None if det else int(seed), space)
        if key not in self._scores:
            self._scores[key] = self.w1_to(self.points(space)[src], k, space, seed)
        return self._scores[key]

    def _eval_truth(self, k: int, space: str) -> np.ndarray:
        cfg = self.cfg
        truth = self.points(space)[k]
        if cfg.max_eval_cells is not None and len(truth) > cfg.max_eval_cells:
            key = (space, k)
            if key not in self._truth:  # one fixed truth subsample for every prediction
                rng = np.random.default_rng([cfg.subsample_seed, k, 7])
                self._truth[key] = truth[rng.choice(len(truth), cfg.max_eval_cells, replace=False)]
            truth = self._truth[key]
        return truth

    def w1_to(self, pred: np.ndarray, k: int, space: str, seed: int) -> float:
        return w1(pred, self._eval_truth(k, space), max_cells=self.cfg.max_eval_cells,
                  rng=np.random.default_rng([int(seed), k, 11]))

    def energy_to(self, pred: np.ndarray, k: int, space: str, seed: int) -> float:
        cap = self.cfg.max_eval_cells
        if cap is not None and len(pred) > cap:
            pred = pred[np.random.default_rng([int(seed), k, 11]).choice(len(pred), cap, replace=False)]
        return energy_distance(pred, self._eval_truth(k, space))


def _validation_triples(K: int, held_out: int) -> list[tuple[int, int, int]]:
    """Leave-one-out triples of the sequence with ``held_out`` removed: its cells are never used."""
    seq = [m for m in range(K) if m != held_out]
    return [(seq[p - 1], seq[p], seq[p + 1]) for p in range(1, len(seq) - 1)]


def _sd(values: Sequence[float]) -> float:
    v = np.asarray(values, np.float64)
    return float(v.std(ddof=1)) if v.size > 1 else 0.0


def select_sigma(tc: TimeCourse, k: int, space: str = "latent") -> tuple[list[float], str, dict]:
    """σ grid points (units of ŝ) ranked by validation W1 for held-out time k, best first.

    Validation triples come from the sequence with k removed; scores are reference-space W1 of the
    bridge with its noise carried (noise map fitted without k), first seed.
    """
    cfg = tc.cfg
    grid = sorted(set(cfg.sigmas))
    triples = _validation_triples(tc.K, k)
    scores: dict[float, float | None] = {}
    for c in sorted(grid, reverse=True):  # large σ first: each plan warm-starts the next
        try:
            vals = [tc.score(a, m, b, c, sd, coupling_space=space, exclude=k, stat=cfg.select_on)
                    for a, m, b in triples for sd in cfg.seeds]
        except SolverError as exc:
            log.warning("held-out t%d (%s): sigma grid point %g failed on validation: %s", k, space, c, exc)
            scores[c] = None
            continue
        scores[c] = float(np.mean(vals)) if vals else None
    ranked = sorted((v, c) for c, v in scores.items() if v is not None)
    if not triples:
        return [cfg.sigma_fallback], "default (no validation triple)", {"triples": [], "scores": {}}
    if not ranked:
        raise SolverError(f"held-out time {k}: every sigma of the grid {grid} failed on validation ({space})")
    return [c for _, c in ranked], "validation", {"triples": triples, "scores": {str(c): v for c, v in scores.items()}}


def _test(tc: TimeCourse, k: int, order: list[float], how: str, space: str) -> tuple[float, str, list[float]]:
    """Scores at the validated best σ (the next best if its test plan fails), every seed."""
    a, b = k - 1, k + 1
    for c in order:
        try:
            vals = [tc.score(a, k, b, c, s, coupling_space=space, exclude=k) for s in tc.cfg.seeds]
            return c, how if c == order[0] else f"{how}, next best (the best failed on the test pair)", vals
        except SolverError as exc:
            log.warning("held-out t%d (%s): sigma %g failed on the test pair, trying the next best: %s", k, space, c, exc)
    raise SolverError(f"held-out time {k}: every validated sigma failed on the test pair ({space})")


def leave_one_timepoint_out(tc: TimeCourse) -> tuple[dict[str, float], dict[str, Any]]:
    """Hold out each interior snapshot, predict it from its neighbours, score absolute W1 in the reference space.

    For held-out k (docs/BRIDGE.md, "Time course"): σ is chosen on validation triples without k;
    then for every seed the estimators of :data:`ESTIMATORS` are scored. Metrics: ``w1_<e>`` the mean over
    held-out times of the seed means, ``w1_<e>_sd`` the sd over seeds of the time-averaged value,
    ``w1_<e>_t<k>`` / ``_t<k>_sd`` per held-out time; ``w1_<e>_rel_best_snapshot`` the ratio to the best
    of the previous and next snapshot (per time, then averaged); ``w1_latent_*`` the same in the latent.
    """
    cfg, K = tc.cfg, tc.K
    if K < 3:
        raise InputError(f"leave-one-timepoint-out needs >= 3 time points, got {K}", key=cfg.time_key)
    seeds = list(cfg.seeds)
    per_time: dict[int, dict] = {}
    validation: dict[int, dict] = {}
    pooled: dict[float, list[float]] = {}
    for k in range(1, K - 1):
        a, b = k - 1, k + 1
        order, how, val = select_sigma(tc, k, "latent")
        c, how, bridge = _test(tc, k, order, how, "latent")
        if cfg.reference_row:
            order_r, how_r, val_r = select_sigma(tc, k, "ref")
            c_r, how_r, expr = _test(tc, k, order_r, how_r, "ref")
        else:  # switched off (tasks.bridge.reference_row): the row is n/a, NaNs are dropped from the metrics
            c_r, how_r, val_r, expr = None, "off", {}, [float("nan")] * len(seeds)
        for cc, v in val["scores"].items():
            if v is not None:
                pooled.setdefault(float(cc), []).append(v)
        rec = {
            "c": float(c), "how": how, "c_expr_pcs": None if c_r is None else float(c_r), "how_expr_pcs": how_r,
            "bridge": bridge, "expr_pcs": expr,
            "exact_ot": [tc.score(a, k, b, 0.0, s) for s in seeds],
            "random": [tc.score(a, k, b, None, s) for s in seeds],
            "prev": [tc.snapshot_score(a, k, s) for s in seeds],
            "next": [tc.snapshot_score(b, k, s) for s in seeds],
            "latent_bridge": [tc.score(a, k, b, c, s, space="latent", exclude=k) for s in seeds],
            "latent_prev": [tc.snapshot_score(a, k, s, "latent") for s in seeds],
            "latent_next": [tc.snapshot_score(b, k, s, "latent") for s in seeds],
        }
        per_time[k] = rec
        validation[k] = dict(val, chosen=float(c), expr_pcs=dict(val_r, chosen=None if c_r is None else float(c_r)))
        log.info("held-out t%d: sigma=%g (%s) W1 bridge %.4g | exact OT %.4g random %.4g prev %.4g next %.4g | "
                 "expression PCs %.4g (sigma %s)", k, c, how, np.mean(bridge), np.mean(rec["exact_ot"]),
                 np.mean(rec["random"]), np.mean(rec["prev"]), np.mean(rec["next"]), np.mean(expr), c_r)

    ks = sorted(per_time)
    m: dict[str, float] = {}

    def put(name: str, per_k: dict[int, np.ndarray]) -> None:  # per_k: (n_seeds,) per held-out time
        for k in ks:
            m[f"{name}_t{k}"] = float(np.mean(per_k[k]))
            m[f"{name}_t{k}_sd"] = _sd(per_k[k])
        v = np.mean([per_k[k] for k in ks], axis=0)  # (n_seeds,) time-averaged
        m[name], m[name + "_sd"] = float(v.mean()), _sd(v)

    arr = {e: {k: np.asarray(per_time[k][e], np.float64) for k in ks} for e in per_time[ks[0]] if
           isinstance(per_time[ks[0]][e], list)}
    for e in ESTIMATORS:
        put(f"w1_{e}", arr[e])
    best = {k: np.minimum(arr["prev"][k], arr["next"][k]) for k in ks}
    put("w1_best_snapshot", best)
    with np.errstate(divide="ignore", invalid="ignore"):
        for e in ESTIMATORS:
            put(f"w1_{e}_rel_best_snapshot", {k: arr[e][k] / best[k] for k in ks})
        lbest = {k: np.minimum(arr["latent_prev"][k], arr["latent_next"][k]) for k in ks}
        put("w1_latent_bridge", arr["latent_bridge"])
        put("w1_latent_best_snapshot", lbest)
        put("w1_latent_rel_best_snapshot", {k: arr["latent_bridge"][k] / lbest[k] for k in ks})  # skill in the latent
    m = {k: v for k, v in m.items() if np.isfinite(v)}  # a ratio to 0 (or a row switched off) is left out
    m["sigma"] = float(np.mean([per_time[k]["c"] for k in ks]))
    m["sigma_abs"] = float(np.mean([per_time[k]["c"] * tc.scale["latent"] for k in ks]))
    for k in ks:
        m[f"sigma_t{k}"] = float(per_time[k]["c"])
        if cfg.reference_row:
            m[f"sigma_expr_pcs_t{k}"] = float(per_time[k]["c_expr_pcs"])
    if cfg.reference_row:
        m["sigma_expr_pcs"] = float(np.mean([per_time[k]["c_expr_pcs"] for k in ks]))
    m["n_heldout_times"] = float(len(ks))
    pooled_mean = {c: float(np.mean(v)) for c, v in pooled.items() if v}
    details = {"per_time": per_time, "validation": validation, "pooled_validation": pooled_mean,
               "latent_scale": tc.scale["latent"], "ref_scale": tc.scale["ref"]}
    return m, details
