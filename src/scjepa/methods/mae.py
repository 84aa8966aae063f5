"""scMAE (ssl_in_scg, random masking): reconstruct masked genes from the rest.

x_in = x ⊙ m / (1 − p), m ~ Bernoulli(1 − p), p = 0.5 (the 1/(1 − p) rescaling as in ssl_in_scg;
``rescale_masked``). Loss: MSE between x̂ = g(f(x_in)) and x over the masked genes only (the mean over
masked entries; ssl_in_scg averages over all entries, a constant factor p). The decoder output is linear
(ssl_in_scg's sigmoid cannot reach log1p values above 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from scjepa.errors import InputError
from scjepa.methods.base import TorchMethod, TrainHParams, encoder_kwargs
from scjepa.models.distributed import draw_cells, global_sum, rank_world
from scjepa.models.mlp import Decoder, Encoder, keep_mask, quantise


@dataclass
class MAEHParams(TrainHParams):
    mask_rate: float = 0.5
    rescale_masked: bool = True

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.mask_rate < 1:
            raise InputError(f"must be in (0, 1) (got {self.mask_rate})", key="mask_rate")


class MAEModule(nn.Module):
    loss_terms = ("loss",)

    def __init__(self, n_genes: int, hp: MAEHParams):
        super().__init__()
        self.hp = hp
        self.encoder = Encoder(**encoder_kwargs(hp, n_genes))
        self.decoder = Decoder(**encoder_kwargs(hp, n_genes))

    def training_step(self, batch: dict, generator=None) -> dict[str, torch.Tensor]:
        x, p = batch["x"], self.hp.mask_rate
        keep = draw_cells(x.shape, 0, lambda s: keep_mask(s, p, generator, x.device))
        x_in = x * keep
        if self.hp.rescale_masked:
            x_in.mul_(32768 / (32768 - quantise(p)))
        err = (self.decoder(self.encoder(x_in)).float() - x.float()).square().masked_fill_(keep, 0.0)
        n_masked = keep.numel() - keep.sum()
        world = rank_world()[1]
        if world == 1:
            return {"loss": err.sum() / n_masked.clamp_min(1)}
        # the mean over the global batch's masked entries; DDP's average over ranks undoes the factor W
        return {"loss": err.sum() * world / global_sum(n_masked).clamp_min(1)}


class MAE(TorchMethod):
    family = "mae"
    HParams = MAEHParams

    def build_module(self, n_genes: int) -> MAEModule:
        return MAEModule(n_genes, self.hparams)
