"""scJEPA (paper §2, Algorithm 1): masked views + SIGReg + denoising reconstruction.

Per mini-batch x (N, D): G global views (the unmasked x; with ``n_global_views=2`` also x ⊙ m with the
light mask rate ``global_mask_rate``, our analogue of LeJEPA's second global crop) and V local views
x ⊙ m, m ~ Bernoulli(1 − p). All G + V views go through the ONE shared encoder (and decoder) in a single
call ((G + V)·N, D). With e = h(z) (the projection head, or z when ``projection_head=False``):

    L_sim    = mean_{n,v} ‖c_n − e_n^(v)‖²       c = mean of the global embeddings (= e of x when G = 1);
                                                  v over the local views (G = 1, eq. 4) or all views (G = 2,
                                                  as LeJEPA)
    L_SIGReg = mean over the G + V views of SIGReg(e^(v)) · N_ref / N, one set of M directions per step
    L_recon  = mean_n ‖x_n − x̂_n^(g)‖² + mean_{n,v} ‖x_n − x̂_n^(v)‖²
                                                  every view reconstructs the UNMASKED x (eq. 8)
    L        = (1 − λ) L_sim + λ L_SIGReg + γ L_recon          (eq. 9; ``lejepa=False``: L = γ L_recon)

The defaults are the paper's equations: ‖·‖² sums over embedding dims (eq. 4) and genes (eq. 8)
(``sim_reduction`` / ``recon_reduction`` = "mean" average instead, as LeJEPA's code and an MSE do; then λ
and γ mean something else). SIGReg's T_EP is N times a mean over the batch, so its weight grows with the
batch size N; ``sigreg_reference_batch`` (N_ref, default 1024 = the paper's batch) rescales it to the value
it would have at N_ref cells, so a λ chosen at one batch size means the same at another (0 = the raw T).
λ and γ are not given by the paper: the defaults were chosen by the validation sweep recorded in
benchmarks/RESULTS.md (``config/sweeps.yaml``). Evaluations embed with the encoder output z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from scjepa.errors import InputError
from scjepa.methods.base import TorchMethod, TrainHParams, encoder_kwargs
from scjepa.models.distributed import draw_cells, gather_cells
from scjepa.models.mlp import Decoder, Encoder, keep_mask, mlp, quantise
from scjepa.models.sigreg import QUADRATURES, WINDOWS, SIGReg


@dataclass
class ScJEPAHParams(TrainHParams):
    n_local_views: int = 8  # V
    mask_rate: float = 0.5  # p: a gene of a local view is zeroed with probability p
    n_global_views: int = 1  # 1: the unmasked x; 2: + x masked at global_mask_rate
    global_mask_rate: float = 0.1
    rescale_masked: bool = False  # divide masked views by (1 − p) (ssl_in_scg's MAE does; the paper: x ⊙ m)
    lambda_sigreg: float = 0.02  # λ: the validation sweep on the embedded world (config/sweeps.yaml, session 7)
    gamma_recon: float = 0.3  # γ, same sweep (1,000 genes; scales with the gene count); 0 = "w/o reconstruction"
    lejepa: bool = True  # False = the "w/o LeJEPA" ablation: L = γ L_recon (a denoising autoencoder)
    projection_head: bool = True  # L_sim and SIGReg act on h(z); decoder and evaluations use z
    head_hidden: tuple[int, ...] = (256,)
    head_dim: int = 64
    sigreg_directions: int = 256  # M
    sigreg_points: int = 17
    sigreg_t_max: float = 5.0
    sigreg_window: str = "paper"  # "paper" w = exp(-t²) | "lejepa" w = exp(-t²/2)
    sigreg_quadrature: str = "full"  # "full" [-t_max, t_max] | "half" [0, t_max] with n_points knots
    sigreg_reference_batch: int = 1024  # N_ref: SIGReg × N_ref / N (0 = the raw T_EP, which grows with N)
    sim_reduction: str = "sum"  # eq. 4: ‖·‖² over the embedding dims
    recon_reduction: str = "sum"  # eq. 8: ‖·‖² over the genes

    def __post_init__(self):
        super().__post_init__()
        self.head_hidden = tuple(int(h) for h in self.head_hidden)
        if self.n_global_views not in (1, 2):
            raise InputError(f"must be 1 or 2 (got {self.n_global_views})", key="n_global_views")
        for k in ("mask_rate", "global_mask_rate"):
            if not 0 <= getattr(self, k) < 1:
                raise InputError(f"must be in [0, 1) (got {getattr(self, k)})", key=k)
        if self.n_local_views < (1 if self.n_global_views == 1 else 0):
            raise InputError("need at least one local view with one global view", key="n_local_views")
        if self.sigreg_window not in WINDOWS:
            raise InputError(f"must be one of {list(WINDOWS)}", key="sigreg_window")
        if self.sigreg_quadrature not in QUADRATURES:
            raise InputError(f"must be one of {list(QUADRATURES)}", key="sigreg_quadrature")
        if self.sigreg_points < 3 or self.sigreg_points % 2 == 0:
            raise InputError(f"must be odd and ≥ 3 (got {self.sigreg_points})", key="sigreg_points")
        for k in ("sim_reduction", "recon_reduction"):
            if getattr(self, k) not in ("sum", "mean"):
                raise InputError("must be 'sum' or 'mean'", key=k)
        if self.sigreg_reference_batch < 0:
            raise InputError(f"must be ≥ 0 (got {self.sigreg_reference_batch})", key="sigreg_reference_batch")
        if not self.lejepa and self.gamma_recon <= 0:
            raise InputError("lejepa=False leaves only γ·L_recon; γ must be > 0", key="gamma_recon")


def masked_views(x: torch.Tensor, rates: torch.Tensor, generator=None, rescale: bool = False,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, D), rates (W,) -> (W, N, D): view w = x ⊙ m_w, m_w ~ Bernoulli(1 − rates[w]).

    One random draw for all views (``keep_mask``; with data-parallel ranks, the global batch's draw
    sliced: ``draw_cells``), written into ``out`` when given.
    """
    W = rates.shape[0]
    keep = draw_cells((W, *x.shape), 1, lambda s: keep_mask(s, rates.view(W, 1, 1), generator, x.device))
    v = torch.mul(keep, x, out=out)
    if rescale:
        v.mul_(32768 / (32768 - quantise(rates.view(W, 1, 1)).to(x.dtype)))
    return v


class ScJEPAModule(nn.Module):
    def __init__(self, n_genes: int, hp: ScJEPAHParams):
        super().__init__()
        self.hp = hp
        self.encoder = Encoder(**encoder_kwargs(hp, n_genes))
        self.decoder = Decoder(**encoder_kwargs(hp, n_genes)) if hp.gamma_recon > 0 else None
        self.head = None
        if hp.lejepa and hp.projection_head:
            self.head = mlp([hp.latent, *hp.head_hidden, hp.head_dim])
        self.sigreg = SIGReg(hp.sigreg_directions, hp.sigreg_points, hp.sigreg_t_max, hp.sigreg_window,
                             hp.sigreg_quadrature)
        rates = [hp.global_mask_rate] * (hp.n_global_views - 1) + [hp.mask_rate] * hp.n_local_views
        self.register_buffer("rates", torch.tensor(rates, dtype=torch.float32), persistent=False)
        terms = (["sim", "sigreg"] if hp.lejepa else []) + (["recon"] if self.decoder is not None else [])
        self.loss_terms = ("loss", *terms)

    def views(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """((G + V)·N, D): x first, then the masked views, built in one buffer."""
        N = x.shape[0]
        xv = torch.empty((1 + self.rates.numel()) * N, x.shape[1], device=x.device, dtype=x.dtype)
        xv[:N] = x
        if self.rates.numel():
            masked_views(x, self.rates, generator, self.hp.rescale_masked, out=xv[N:].view(-1, *x.shape))
        return xv

    def training_step(self, batch: dict, generator=None) -> dict[str, torch.Tensor]:
        hp, x = self.hp, batch["x"]
        N, G = x.shape[0], hp.n_global_views
        z = self.encoder(self.views(x, generator))  # ((G + V)·N, latent)
        out: dict[str, torch.Tensor] = {}
        loss = z.new_zeros((), dtype=torch.float32)
        if hp.lejepa:
            e = self.head(z) if self.head is not None else z
            e = e.float().view(-1, N, e.shape[-1])  # (G + V, N, K)
            centre = e[:G].mean(0)
            d2 = (e[1:] if G == 1 else e) - centre
            sq = d2.square()
            out["sim"] = sq.sum(-1).mean() if hp.sim_reduction == "sum" else sq.mean()
            # SIGReg is a statistic of the batch: over the global batch with data-parallel ranks
            e_all = gather_cells(e, 1)
            out["sigreg"] = self.sigreg(e_all, generator=generator)
            if hp.sigreg_reference_batch:
                out["sigreg"] = out["sigreg"] * (hp.sigreg_reference_batch / e_all.shape[1])
            loss = loss + (1 - hp.lambda_sigreg) * out["sim"] + hp.lambda_sigreg * out["sigreg"]
        if self.decoder is not None:
            xhat = self.decoder(z).view(-1, *x.shape)  # (G + V, N, D)
            per_view = recon_error(xhat, x, hp.recon_reduction)
            out["recon"] = per_view[:G].mean() + (per_view[G:].mean() if per_view.shape[0] > G else 0.0)
            loss = loss + hp.gamma_recon * out["recon"]
        out["loss"] = loss
        return out


class _SquaredError(torch.autograd.Function):
    """Σ_{n,d} (x̂ − x)² per view, in three passes over (W, N, D) instead of autograd's six."""

    @staticmethod
    def forward(ctx, xhat, x):
        diff = xhat.float() - x.float()  # (W, N, D); x broadcasts over the views
        ctx.save_for_backward(diff)
        ctx.dtype = xhat.dtype
        return torch.linalg.vector_norm(diff.flatten(1), dim=1).square()

    @staticmethod
    def backward(ctx, g):
        (diff,) = ctx.saved_tensors
        return diff.mul((2 * g).view(-1, 1, 1)).to(ctx.dtype), None


def recon_error(xhat: torch.Tensor, x: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per-view reconstruction error of the unmasked x: xhat (W, N, D), x (N, D) -> (W,).

    "mean": MSE over cells and genes; "sum": mean over cells of ‖x − x̂‖² (sum over genes).
    """
    se = _SquaredError.apply(xhat, x)
    return se / x.numel() if reduction == "mean" else se / x.shape[0]


class ScJEPA(TorchMethod):
    """scJEPA and its ablations (all hyper-parameter settings of this family)."""

    family = "scjepa"
    HParams = ScJEPAHParams

    def build_module(self, n_genes: int) -> ScJEPAModule:
        return ScJEPAModule(n_genes, self.hparams)
