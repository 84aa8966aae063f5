"""SIGReg: the sliced Epps–Pulley test of isotropic Gaussianity, used as a loss (LeJEPA).

Embeddings z (V, N, K) are projected on M unit directions a_m (fresh every step, shared by the V views
of a step) and each projection p = z a_m is compared with N(0, 1) by

    T = N ∫ |φ̂(t) − e^{−t²/2}|² w(t) dt,      φ̂(t) = (1/N) Σ_n e^{i t p_n},

averaged over directions and views. Window w(t) = e^{−t²} ("paper", the scJEPA text) or e^{−t²/2}
("lejepa", LeJEPA's code). Under H0, E[T] = ∫ (1 − e^{−t²}) w(t) dt (``expected_null``); a
non-Gaussian sample scores ∝ N.

The integrand is even in t, so the trapezoid rule on [−t_max, t_max] folds onto the knots t ≥ 0 with
doubled interior weights: "full" = the paper's n_points knots on [−t_max, t_max] ((n_points+1)/2 of
them evaluated); "half" = n_points knots on [0, t_max] (LeJEPA's code, half the step, twice the cost).
"""

from __future__ import annotations

import math

import torch
from torch import nn

WINDOWS = {"paper": 1.0, "lejepa": 0.5}  # w(t) = exp(-a t²)
QUADRATURES = ("full", "half")


def quadrature(n_points: int = 17, t_max: float = 5.0, window: str = "paper", rule: str = "full"):
    """Knots t ≥ 0 (T,) and trapezoid weights × window (T,), float64."""
    if n_points < 3 or n_points % 2 == 0:
        raise ValueError(f"n_points must be odd and ≥ 3 (got {n_points})")
    if window not in WINDOWS or rule not in QUADRATURES:
        raise ValueError(f"window must be one of {list(WINDOWS)}, rule one of {list(QUADRATURES)}")
    n = (n_points + 1) // 2 if rule == "full" else n_points
    t = torch.linspace(0.0, t_max, n, dtype=torch.float64)
    h = t_max / (n - 1)
    w = torch.full((n,), 2 * h, dtype=torch.float64)
    w[0] = w[-1] = h  # t = 0 is counted once; ±t_max each carry h/2
    return t, w * torch.exp(-WINDOWS[window] * t**2)


def expected_null(window: str = "paper") -> float:
    """E[T] for an i.i.d. N(0, 1) sample (any N), exact integral over the real line."""
    a = WINDOWS[window]
    return math.sqrt(math.pi / a) - math.sqrt(math.pi / (a + 1.0))


def sample_directions(dim: int, n_directions: int, generator=None, device=None) -> torch.Tensor:
    """(dim, M) unit vectors, uniform on the sphere; the norm is clamped (no 0/0 in low precision)."""
    a = torch.randn(dim, n_directions, generator=generator, device=device, dtype=torch.float32)
    return a / a.norm(dim=0, keepdim=True).clamp_min(1e-6)


class _ECF(torch.autograd.Function):
    """Empirical CF at t_k = k·h, k < T: proj (..., N, M) -> mean cos, mean sin, each (T, ..., M).

    cos(kθ), sin(kθ) come from the Chebyshev recurrence f_k = 2 cos θ · f_{k−1} − f_{k−2} (two trig
    calls instead of 2T) and are kept for the backward pass, d/dp e^{itp} = it e^{itp}.
    """

    @staticmethod
    def forward(ctx, proj, h: float, T: int):
        c = proj.new_empty((T, *proj.shape))
        s = torch.empty_like(c)
        c[0], s[0] = 1.0, 0.0
        torch.cos(proj * h, out=c[1])
        torch.sin(proj * h, out=s[1])
        two_cos = 2 * c[1]
        for k in range(2, T):
            torch.mul(two_cos, c[k - 1], out=c[k]).sub_(c[k - 2])
            torch.mul(two_cos, s[k - 1], out=s[k]).sub_(s[k - 2])
        ctx.save_for_backward(c, s)
        ctx.h = h
        return c.mean(-2), s.mean(-2)

    @staticmethod
    def backward(ctx, g_cos, g_sin):
        c, s = ctx.saved_tensors
        scale = ctx.h / c.shape[-2]
        grad = torch.zeros_like(c[0])
        for k in range(1, c.shape[0]):  # Σ_k t_k (cos_k · g_sin_k − sin_k · g_cos_k) / N
            grad.addcmul_(c[k], (k * scale * g_sin[k]).unsqueeze(-2))
            grad.addcmul_(s[k], (-k * scale * g_cos[k]).unsqueeze(-2))
        return grad, None, None


def epps_pulley(proj: torch.Tensor, t: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """proj (..., N, M) -> T per direction (..., M); t must be the equispaced knots k·h from 0."""
    cos_m, sin_m = _ECF.apply(proj, float(t[1] - t[0]), t.shape[0])
    shape = (-1,) + (1,) * (cos_m.dim() - 1)
    err = (cos_m - torch.exp(-0.5 * t**2).view(shape)).square() + sin_m.square()  # (T, ..., M)
    return proj.shape[-2] * torch.tensordot(weights.to(err.dtype), err, dims=1)


class SIGReg(nn.Module):
    """Mean sliced Epps–Pulley statistic of z (..., N, K), computed in float32."""

    def __init__(self, n_directions=256, n_points=17, t_max=5.0, window="paper", quadrature_rule="full"):
        super().__init__()
        self.n_directions = n_directions
        t, w = quadrature(n_points, t_max, window, quadrature_rule)
        self.register_buffer("t", t.float(), persistent=False)
        self.register_buffer("weights", w.float(), persistent=False)

    def directions(self, dim: int, generator=None) -> torch.Tensor:
        return sample_directions(dim, self.n_directions, generator, self.t.device)

    def forward(self, z: torch.Tensor, directions=None, generator=None) -> torch.Tensor:
        if directions is None:
            directions = self.directions(z.shape[-1], generator)
        with torch.autocast(z.device.type, enabled=False):  # trig of large arguments needs fp32
            return epps_pulley(z.float() @ directions, self.t, self.weights).mean()
