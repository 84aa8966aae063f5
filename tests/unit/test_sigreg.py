"""SIGReg against its definition: the Epps–Pulley integral in closed form, its null value, its power."""

from __future__ import annotations

import math

import pytest
import torch

from scjepa.models.sigreg import (WINDOWS, SIGReg, epps_pulley, expected_null, quadrature,
                                  sample_directions)


def epps_pulley_exact(x: torch.Tensor, window: str) -> float:
    """T = N ∫_R |φ̂(t) − e^{−t²/2}|² e^{−a t²} dt, expanded and integrated analytically.

    |φ̂ − φ|² = (1/N²) Σ_ij cos(t(x_i − x_j)) − (2/N) Σ_i cos(t x_i) e^{−t²/2} + e^{−t²}, and
    ∫ cos(ut) e^{−b t²} dt = √(π/b) e^{−u²/(4b)}.
    """
    a = WINDOWS[window]
    x = x.double()
    d = x[:, None] - x[None, :]
    pairs = math.sqrt(math.pi / a) * torch.exp(-(d**2) / (4 * a)).mean()
    cross = math.sqrt(math.pi / (a + 0.5)) * torch.exp(-(x**2) / (4 * (a + 0.5))).mean()
    return float(len(x) * (pairs - 2 * cross + math.sqrt(math.pi / (a + 1))))


def _samples():
    g = torch.Generator().manual_seed(0)
    return {
        "normal": torch.randn(400, generator=g, dtype=torch.float64),
        "narrow_shifted": 0.5 * torch.randn(400, generator=g, dtype=torch.float64) + 0.3,
        "bimodal": 0.3 * torch.randn(400, generator=g, dtype=torch.float64)
        + torch.randint(0, 2, (400,), generator=g) * 2 - 1,
    }


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("rule", ["full", "half"])
def test_quadrature_matches_closed_form(window, rule):
    for name, x in _samples().items():
        exact = epps_pulley_exact(x, window)
        fine_t, fine_w = quadrature(401, 10.0, window, rule)
        assert float(epps_pulley(x[:, None], fine_t, fine_w)) == pytest.approx(exact, rel=1e-8), name
        t, w = quadrature(17, 5.0, window, rule)  # the defaults: a few per cent at most
        assert float(epps_pulley(x[:, None], t, w)) == pytest.approx(exact, rel=0.03, abs=0.01), name


def test_trapezoid_weights_are_the_folded_full_line_rule():
    t, w = quadrature(17, 5.0, "lejepa", "full")
    assert torch.allclose(t, torch.linspace(0, 5, 9, dtype=torch.float64))
    h = 10 / 16  # step of 17 knots on [-5, 5]
    assert w[0] == pytest.approx(h) and w[4] == pytest.approx(2 * h * math.exp(-0.5 * t[4] ** 2))
    t_half, _ = quadrature(17, 5.0, "lejepa", "half")
    assert len(t_half) == 17 and t_half[1] == pytest.approx(5 / 16)
    with pytest.raises(ValueError):
        quadrature(16, 5.0)


@pytest.mark.parametrize("window", list(WINDOWS))
def test_gaussian_sample_scores_its_expected_value(window):
    g = torch.Generator().manual_seed(1)
    sig = SIGReg(n_directions=512, window=window)
    z = torch.randn(16, 256, 16, generator=g)  # 16 independent batches of N(0, I)
    assert float(sig(z, generator=g)) == pytest.approx(expected_null(window), rel=0.1)


@pytest.mark.parametrize("window", list(WINDOWS))
def test_collapsed_shifted_or_scaled_samples_score_high(window):
    g = torch.Generator().manual_seed(2)
    sig = SIGReg(n_directions=128, window=window)
    z = torch.randn(256, 16, generator=g)
    null = expected_null(window)
    assert float(sig(z, generator=g)) < 2 * null
    assert float(sig(torch.ones(256, 16), generator=g)) > 50 * null  # collapsed
    assert float(sig(z + 2.0, generator=g)) > 50 * null  # shifted
    assert float(sig(0.1 * z, generator=g)) > 20 * null  # shrunk
    assert float(sig(z * 3.0, generator=g)) > 20 * null  # spread


def test_gradient_is_finite_for_constant_input():
    sig = SIGReg(n_directions=64)
    for z in (torch.zeros(32, 8), torch.full((32, 8), 3.0), torch.ones(4, 32, 8)):
        z.requires_grad_(True)
        sig(z, generator=torch.Generator().manual_seed(0)).backward()
        assert torch.isfinite(z.grad).all()


def test_directions_are_unit_and_survive_a_zero_draw():
    a = sample_directions(8, 100, torch.Generator().manual_seed(0))
    assert a.shape == (8, 100) and torch.allclose(a.norm(dim=0), torch.ones(100))
    # The norm clamp: a direction that happens to be zero stays finite (bf16/MPS NaNs in LeJEPA #40).
    zero = torch.zeros(8, 1)
    assert torch.isfinite(zero / zero.norm(dim=0, keepdim=True).clamp_min(1e-6)).all()


def test_directions_shared_across_views_and_fresh_every_call():
    sig = SIGReg(n_directions=32)
    z = torch.randn(5, 64, 8, generator=torch.Generator().manual_seed(3))
    batched = sig(z, generator=torch.Generator().manual_seed(7))
    dirs = sig.directions(8, torch.Generator().manual_seed(7))
    per_view = torch.stack([sig(z[v], directions=dirs) for v in range(5)]).mean()
    assert torch.allclose(batched, per_view, rtol=1e-5)  # one set of directions for all views
    g = torch.Generator().manual_seed(7)
    assert not torch.equal(sig.directions(8, g), sig.directions(8, g))  # fresh each step
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(sig(z, generator=g1), sig(z, generator=g2))  # reproducible from the seed


def test_chebyshev_ecf_gradient_is_exact():
    t, w = quadrature(17, 5.0, "paper", "half")
    p = torch.randn(2, 12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: epps_pulley(q, t, w), (p,))
    xt = p.detach().unsqueeze(-1) * t  # direct cos/sin of every knot
    direct = p.shape[-2] * (((xt.cos().mean(-3) - torch.exp(-0.5 * t**2)) ** 2 + xt.sin().mean(-3) ** 2) @ w)
    assert torch.allclose(epps_pulley(p.detach(), t, w), direct, rtol=1e-10)
