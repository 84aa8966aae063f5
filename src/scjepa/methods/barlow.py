"""scBT: Barlow Twins on the shared encoder (ssl_in_scg).

Two independently augmented views of x go through the encoder in one call and through the projector
(64 -> 256 -> 256 -> 512 -> 512: Linear without bias + BatchNorm + ReLU, last Linear plain; ssl_in_scg's
"256-256-512-512"), each view separately so BatchNorm sees one view's batch. Loss: with ẑ the per-view
standardised projections and c = ẑ1ᵀẑ2 / N, L = Σ_i (1 − c_ii)² + λ_off Σ_{i≠j} c_ij², λ_off = 0.0051.

Augmentations (``augmentation``):
- "negbin" (ssl_in_scg HEAD): x + intensity · log1p(10⁴ · n / Σn) with n NB-like noise: a Gaussian with
  the mean and variance of NB(10, p), p ~ U(0, 1) per cell, clamped at 0 (one normal draw per entry:
  exact NB sampling by Poisson(Gamma) cost more than the whole network on CPU), then dropout (zero with
  probability ``dropout_intensity``, rescale), clamp ≥ 0. Both views are augmented (HEAD augments one
  view only).
- "gaussian" (the checkpoint ssl_in_scg fine-tuned): x + N(0, σ1²) and x + N(0, σ2²), clamp ≥ 0,
  σ1 = ``gaussian_sigma``, σ2 = σ1 / 10.
The optimiser is the shared AdamW (ssl_in_scg used LARS).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from scjepa.errors import InputError
from scjepa.methods.base import TorchMethod, TrainHParams, encoder_kwargs
from scjepa.models.distributed import BatchNorm1d, draw_cells, gather_cells
from scjepa.models.mlp import Encoder, keep_mask, quantise


@dataclass
class BarlowTwinsHParams(TrainHParams):
    projector: tuple[int, ...] = (256, 256, 512, 512)
    lambda_offdiag: float = 0.0051
    augmentation: str = "negbin"  # "negbin" | "gaussian"
    negbin_intensity: float = 0.2
    negbin_total_count: float = 10.0
    dropout_intensity: float = 0.1
    gaussian_sigma: float = 0.01

    def __post_init__(self):
        super().__post_init__()
        self.projector = tuple(int(h) for h in self.projector)
        if self.augmentation not in ("negbin", "gaussian"):
            raise InputError("must be 'negbin' or 'gaussian'", key="augmentation")
        if not 0 <= self.dropout_intensity < 1:
            raise InputError("must be in [0, 1)", key="dropout_intensity")


def _projector(dims) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i == len(dims) - 2:
            layers.append(nn.Linear(a, b, bias=False))
        else:
            # BatchNorm over the global batch with data-parallel ranks (plain BatchNorm1d otherwise)
            layers += [nn.Linear(a, b, bias=False), BatchNorm1d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def augment(x: torch.Tensor, hp: BarlowTwinsHParams, generator=None, sigma: float | None = None) -> torch.Tensor:
    """One augmented copy of x (N, D); every draw comes from ``generator`` (per cell: ``draw_cells``)."""
    def randn(*shape):
        return draw_cells(shape, 0, lambda s: torch.randn(s, generator=generator, device=x.device, dtype=x.dtype))

    if hp.augmentation == "gaussian":
        return (x + randn(*x.shape).mul_(hp.gaussian_sigma if sigma is None else sigma)).clamp_min_(0)
    k = hp.negbin_total_count
    p = draw_cells((x.shape[0], 1), 0, lambda s: torch.rand(s, generator=generator, device=x.device,
                                                            dtype=x.dtype)).clamp_(max=0.99)
    mu = k * p / (1 - p)  # NB(k, p): mean μ, variance μ + μ²/k; moment-matched Gaussian, clamped at 0
    n = randn(*x.shape).mul_((mu + mu**2 / k).sqrt()).add_(mu).clamp_min_(0)
    out = torch.log1p(n.mul_(1e4 / n.sum(1, keepdim=True).clamp_min(1e-6))).mul_(hp.negbin_intensity).add_(x)
    if hp.dropout_intensity > 0:
        q = hp.dropout_intensity
        out.mul_(draw_cells(x.shape, 0, lambda s: keep_mask(s, q, generator, x.device)))
        out.mul_(32768 / (32768 - quantise(q)))
    return out.clamp_min_(0)


class BarlowTwinsModule(nn.Module):
    loss_terms = ("loss", "on_diag", "off_diag")

    def __init__(self, n_genes: int, hp: BarlowTwinsHParams):
        super().__init__()
        self.hp = hp
        self.encoder = Encoder(**encoder_kwargs(hp, n_genes))
        self.projector = _projector([hp.latent, *hp.projector])

    def training_step(self, batch: dict, generator=None) -> dict[str, torch.Tensor]:
        x = batch["x"]
        N = x.shape[0]
        s2 = self.hp.gaussian_sigma / 10
        v = torch.cat([augment(x, self.hp, generator), augment(x, self.hp, generator, sigma=s2)])
        z = self.encoder(v)
        # the standardisation and the cross-correlation are batch statistics: over the global batch
        p1, p2 = (gather_cells(self.projector(zz).float()) for zz in (z[:N], z[N:]))
        p1 = (p1 - p1.mean(0)) / p1.std(0, unbiased=False).add(1e-5)  # BN(affine=False), batch stats
        p2 = (p2 - p2.mean(0)) / p2.std(0, unbiased=False).add(1e-5)
        c = p1.T @ p2 / p1.shape[0]
        on = (torch.diagonal(c) - 1).square().sum()
        off = c.square().sum() - torch.diagonal(c).square().sum()
        return {"loss": on + self.hp.lambda_offdiag * off, "on_diag": on, "off_diag": off}


class BarlowTwins(TorchMethod):
    family = "barlow_twins"
    HParams = BarlowTwinsHParams

    def build_module(self, n_genes: int) -> BarlowTwinsModule:
        return BarlowTwinsModule(n_genes, self.hparams)
