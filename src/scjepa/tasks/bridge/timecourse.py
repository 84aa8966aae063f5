"""Time courses: snapshots in a latent and the reference space, and leave-one-timepoint-out."""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from scjepa.errors import InputError, SolverError
from scjepa.tasks.bridge.config import BridgeConfig
from scjepa.tasks.bridge.couplings import Coupling, bridge_coupling
from scjepa.tasks.bridge.sampling import sample_bridge
from scjepa.tasks.bridge.spaces import latent_scale, w1

log = logging.getLogger(__name__)


class TimeCourse:
    """Snapshots of one time course in a latent (Z_k) and the reference space (R_k), with caches.

    ``tau``: time parameter of each snapshot (index or real time). Couplings are cached per
    (space, a, b, c), c being σ in units of that space's scale.
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

    def fraction(self, a: int, k: int, b: int) -> float:
        return float((self.tau[k] - self.tau[a]) / (self.tau[b] - self.tau[a]))

    def predict(self, a: int, k: int, b: int, c: float | None, seed: int, *, space: str = "latent"
                ) -> dict[str, np.ndarray]:
        """Predict snapshot k from a and b: ``{"ref": carried reference points, "latent": bridge sample}``.

        ``c=None`` is the random (independent) coupling. ``space="ref"`` couples in the reference
        space itself (the McCann baseline with c = 0); then only "ref" is returned.
        """
        s, dt = self.fraction(a, k, b), self.tau[b] - self.tau[a]
        rng = np.random.default_rng([int(seed), a, k, b])
        X = self.points(space)
        if c is None:  # independent coupling: j uniform for every i, straight line, no noise
            i, j = np.arange(len(X[a])), rng.integers(0, len(X[b]), size=len(X[a]))
            xs = (1.0 - s) * X[a][i] + s * X[b][j]
        else:
            xs, i, j = sample_bridge(X[a], X[b], self.coupling(a, b, c, space), s, c * self.scale[space], dt, rng)
        out = {"ref": (1.0 - s) * self.R[a][i] + s * self.R[b][j]}
        if space == "latent":
            out["latent"] = xs
        return out

    def score(self, a: int, k: int, b: int, c: float | None, seed: int, space: str = "ref",
              coupling_space: str = "latent") -> float:
        """W1 in ``space`` of the prediction of k from (a, b) with a coupling in ``coupling_space`` (memoised:
        a validation triple of one held-out time can be the test triple of another)."""
        key = (a, k, b, c, int(seed), space, coupling_space)
        if key not in self._scores:
            pred = self.predict(a, k, b, c, seed, space=coupling_space)[space]
            self._scores[key] = self.w1_to(pred, k, space, seed)
        return self._scores[key]

    def w1_to(self, pred: np.ndarray, k: int, space: str, seed: int) -> float:
        cfg = self.cfg
        truth = self.points(space)[k]
        if cfg.max_eval_cells is not None and len(truth) > cfg.max_eval_cells:
            key = (space, k)
            if key not in self._truth:  # one fixed truth subsample for every prediction
                rng = np.random.default_rng([cfg.subsample_seed, k, 7])
                self._truth[key] = truth[rng.choice(len(truth), cfg.max_eval_cells, replace=False)]
            truth = self._truth[key]
        return w1(pred, truth, max_cells=cfg.max_eval_cells, rng=np.random.default_rng([int(seed), k, 11]))


def _validation_triples(K: int, held_out: int) -> list[tuple[int, int, int]]:
    """Leave-one-out triples of the sequence with ``held_out`` removed: its cells are never used."""
    seq = [m for m in range(K) if m != held_out]
    return [(seq[p - 1], seq[p], seq[p + 1]) for p in range(1, len(seq) - 1)]


def _sd(values: Sequence[float]) -> float:
    v = np.asarray(values, np.float64)
    return float(v.std(ddof=1)) if v.size > 1 else 0.0


def leave_one_timepoint_out(tc: TimeCourse) -> tuple[dict[str, float], dict[str, Any]]:
    """Hold out each interior snapshot, predict it from its neighbours, score W1.

    For held-out k: σ is chosen on :func:`_validation_triples` (first seed, reference-space W1);
    then for every seed the bridge k − 1 → k + 1 is sampled at k and scored in the reference space
    and the latent, beside the baselines of docs/BRIDGE.md ("Time course"). Metrics are means over
    held-out times of the seed means; ``*_sd`` the sd over seeds of the time-averaged value.
    """
    cfg, K = tc.cfg, tc.K
    if K < 3:
        raise InputError(f"leave-one-timepoint-out needs >= 3 time points, got {K}", key=cfg.time_key)
    grid = sorted(set(cfg.sigmas))
    seeds = list(cfg.seeds)
    per_time: dict[int, dict] = {}
    validation: dict[int, dict] = {}
    pooled: dict[float, list[float]] = {c: [] for c in grid}
    for k in range(1, K - 1):
        triples = _validation_triples(K, k)
        scores: dict[float, float | None] = {}
        for c in sorted(grid, reverse=True):  # large σ first: each plan warm-starts the next
            try:
                vals = [tc.score(a, m, b, c, seeds[0]) for a, m, b in triples]
            except SolverError as exc:
                log.warning("held-out t%d: sigma grid point %g failed on validation: %s", k, c, exc)
                scores[c] = None
                continue
            scores[c] = float(np.mean(vals)) if vals else None
            pooled[c].extend(vals)
        ranked = sorted((v, c) for c, v in scores.items() if v is not None)
        if not triples:
            order, how = [cfg.sigma_fallback], "default (no validation triple)"
        elif ranked:
            order, how = [c for _, c in ranked], "validation"
        else:
            raise SolverError(f"held-out time {k}: every sigma of the grid {grid} failed on validation")
        rec = None
        for c in order:  # the validated best; the next best if its test plan fails
            try:
                rec = _score_heldout(tc, k, c, seeds)
                break
            except SolverError as exc:
                log.warning("held-out t%d: sigma %g failed on the test pair, trying the next best: %s", k, c, exc)
        if rec is None:
            raise SolverError(f"held-out time {k}: every validated sigma failed on the test pair")
        rec["how"] = how if rec["c"] == order[0] else f"{how}, next best (the best failed on the test pair)"
        per_time[k] = rec
        validation[k] = {"triples": triples, "scores": {str(c): v for c, v in scores.items()}, "chosen": rec["c"]}
        log.info("held-out t%d: sigma=%g (%s), W1_ref=%.4g (McCann %.4g, random %.4g, prev %.4g, next %.4g)",
                 k, rec["c"], how, np.mean(rec["ref"]), np.mean(rec["mccann_ref"]), np.mean(rec["random_ref"]),
                 rec["prev_ref"], rec["next_ref"])

    ks = sorted(per_time)

    def over_seeds(key):  # (n_seeds,) time-averaged values
        return np.mean([per_time[k][key] for k in ks], axis=0)

    m: dict[str, float] = {}
    for key, name in (("ref", "w1_ref"), ("latent", "w1_latent"), ("random_ref", "w1_ref_random"),
                      ("mccann_ref", "w1_ref_mccann"), ("mccann_latent", "w1_latent_mccann")):
        v = over_seeds(key)
        m[name] = float(v.mean())
        m[name + "_sd"] = _sd(v)
    for key, name in (("prev_ref", "w1_ref_prev"), ("next_ref", "w1_ref_next"),
                      ("prev_latent", "w1_latent_prev"), ("next_latent", "w1_latent_next")):
        m[name] = float(np.mean([per_time[k][key] for k in ks]))
    best_neighbour = float(np.mean([min(per_time[k]["prev_ref"], per_time[k]["next_ref"]) for k in ks]))
    for name, num, den in (("w1_ref_rel_mccann", m["w1_ref"], m["w1_ref_mccann"]),
                           ("w1_ref_rel_random", m["w1_ref"], m["w1_ref_random"]),
                           ("w1_ref_rel_best_neighbour", m["w1_ref"], best_neighbour),
                           ("w1_latent_rel_mccann", m["w1_latent"], m["w1_latent_mccann"])):
        if den > 0:  # a ratio to 0 is undefined: the metric is left out, not written as inf
            m[name] = num / den
    m["sigma"] = float(np.mean([per_time[k]["c"] for k in ks]))
    m["sigma_abs"] = float(np.mean([per_time[k]["c"] * tc.scale["latent"] for k in ks]))
    for k in ks:
        m[f"w1_ref_t{k}"] = float(np.mean(per_time[k]["ref"]))
        m[f"w1_ref_mccann_t{k}"] = float(np.mean(per_time[k]["mccann_ref"]))
        m[f"sigma_t{k}"] = float(per_time[k]["c"])
    m["n_heldout_times"] = float(len(ks))
    pooled_mean = {c: float(np.mean(v)) for c, v in pooled.items() if v}
    details = {"per_time": per_time, "validation": validation, "pooled_validation": pooled_mean,
               "latent_scale": tc.scale["latent"], "ref_scale": tc.scale["ref"]}
    return m, details


def _score_heldout(tc: TimeCourse, k: int, c: float, seeds: Sequence[int]) -> dict:
    a, b = k - 1, k + 1
    rec: dict[str, Any] = {"c": float(c), "ref": [], "latent": [], "random_ref": [], "mccann_ref": [], "mccann_latent": []}
    for seed in seeds:
        rec["ref"].append(tc.score(a, k, b, c, seed))
        rec["latent"].append(tc.score(a, k, b, c, seed, space="latent"))
        rec["random_ref"].append(tc.score(a, k, b, None, seed))
        rec["mccann_ref"].append(tc.score(a, k, b, 0.0, seed, coupling_space="ref"))
        rec["mccann_latent"].append(tc.score(a, k, b, 0.0, seed, space="latent"))
    s0 = seeds[0]
    for space in ("ref", "latent"):
        X = tc.points(space)
        rec[f"prev_{space}"] = tc.w1_to(X[a], k, space, s0)
        rec[f"next_{space}"] = tc.w1_to(X[b], k, space, s0)
    return rec
