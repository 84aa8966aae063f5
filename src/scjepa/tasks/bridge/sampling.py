"""Sampling a bridge: points at a fraction of an interval, and whole paths through chained couplings."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from scjepa.tasks.bridge.couplings import Coupling


def bridge_noise_sd(sigma: float, dt: float, s: float) -> float:
    """Per-coordinate sd of a Brownian bridge of diffusion σ over Δt at fraction s: σ√(Δt s(1−s))."""
    return float(sigma * math.sqrt(max(dt * s * (1.0 - s), 0.0)))


def sample_bridge(x0: np.ndarray, x1: np.ndarray, coupling: Coupling, s: float, sigma: float, dt: float,
                  rng: np.random.Generator, *, noise: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the bridge at fraction s ∈ [0, 1]: one point per source cell.

    Returns ``(x_s (n0, d), i (n0,), j (n0,))`` with j_i ~ π(i, ·) and
    x_s = (1 − s) x0_i + s x1_j + σ √(Δt s (1 − s)) ξ (ξ omitted with ``noise=False``).
    """
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"s must be in [0, 1], got {s}")
    i = np.arange(coupling.n0)
    j = coupling.sample_targets(rng)
    xs = (1.0 - s) * np.asarray(x0, np.float64)[i] + s * np.asarray(x1, np.float64)[j]
    sd = bridge_noise_sd(sigma, dt, s)
    if noise and sd > 0:
        xs = xs + sd * rng.standard_normal(xs.shape)
    return xs, i, j


def chain_indices(couplings: Sequence[Coupling], rng: np.random.Generator, start: np.ndarray) -> np.ndarray:
    """Markov chain of indices through consecutive couplings: (len(start), K) (TorchCFM's chaining)."""
    idx = [np.asarray(start, np.int64)]
    for c in couplings:
        j = c.sample_targets(rng)
        idx.append(j[idx[-1]])
    return np.stack(idx, axis=1)


def sample_paths(snapshots: Sequence[np.ndarray], couplings: Sequence[Coupling], sigmas: Sequence[float],
                 dts: Sequence[float], rng: np.random.Generator, n_paths: int, steps: int = 8
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Paths of the chained bridge: (n_paths, (K−1)·steps + 1, d) and their time offsets (in Δt units).

    Anchors are chained pair draws; between anchors a Brownian bridge of diffusion σ_k is drawn
    sequentially (x(s) = (1−s)x₀ + s x₁ + σ√Δt (W(s) − s W(1)), so every marginal has variance
    σ²Δt s(1−s)).
    """
    start = rng.choice(len(snapshots[0]), size=min(n_paths, len(snapshots[0])), replace=False)
    idx = chain_indices(couplings, rng, start)
    d = snapshots[0].shape[1]
    grid = np.linspace(0.0, 1.0, steps + 1)
    pieces, times, t0 = [], [], 0.0
    for k, (sig, dt) in enumerate(zip(sigmas, dts)):
        x0 = np.asarray(snapshots[k], np.float64)[idx[:, k]]
        x1 = np.asarray(snapshots[k + 1], np.float64)[idx[:, k + 1]]
        incr = rng.standard_normal((len(start), steps, d)) * math.sqrt(1.0 / steps)
        W = np.concatenate([np.zeros((len(start), 1, d)), np.cumsum(incr, axis=1)], axis=1)
        B = W - grid[None, :, None] * W[:, -1:, :]
        seg = (1 - grid)[None, :, None] * x0[:, None] + grid[None, :, None] * x1[:, None] + sig * math.sqrt(dt) * B
        pieces.append(seg if k == 0 else seg[:, 1:])
        tt = t0 + grid * dt
        times.append(tt if k == 0 else tt[1:])
        t0 += dt
    return np.concatenate(pieces, axis=1), np.concatenate(times)
