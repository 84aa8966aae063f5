"""The MLP encoder and decoder shared by every neural method (ssl_in_scg / scTab shape).

Encoder: D -> 512 -> 512 -> 256 -> 256 -> 64, SELU, dropout 0.1, no normalisation layers.
The decoder mirrors it. Shapes: input (N, D) log1p-normalised expression, output (N, latent).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from scjepa.models.distributed import draw_cells, local_cells, rank_world

DEFAULT_HIDDEN: tuple[int, ...] = (512, 512, 256, 256)
DEFAULT_LATENT = 64


def keep_mask(shape, p, generator=None, device=None) -> torch.Tensor:
    """Boolean mask, True with probability 1 − p (p quantised to 1/32768; p: float or a tensor
    broadcastable to ``shape``). Drawn as 15-bit integers from one ``random_`` call, several times
    faster on CPU than ``bernoulli_`` or ``rand`` + compare.
    """
    n = math.prod(shape)
    bits = torch.empty((n + 1) // 2, dtype=torch.int32, device=device).random_(generator=generator)
    u = bits.view(torch.int16)[:n].view(shape).bitwise_and_(0x7FFF)  # uniform on [0, 32768)
    return u >= quantise(p)


def quantise(p):
    """The threshold of ``keep_mask`` for rate p: P(drop) = quantise(p) / 32768."""
    return (p * 32768).round().to(torch.int16) if torch.is_tensor(p) else int(round(p * 32768))


class Dropout(nn.Dropout):
    """nn.Dropout with ``keep_mask`` on CPU (``bernoulli_`` dominated small CPU steps); F.dropout on GPU.

    With several data-parallel ranks the mask is drawn for the global batch and sliced
    (``models.distributed.draw_cells``; rows are view-major, (k views · n cells, features)), on any
    device: then a W-rank run on CPU draws exactly the masks of the 1-process run. On CUDA the
    1-process run keeps the fused F.dropout, so there W ranks and one GPU draw different (equally
    distributed) masks.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return super().forward(x)
        thr = quantise(self.p)
        if rank_world()[1] > 1:
            n = local_cells()
            shape = (x.shape[0] // n, n, *x.shape[1:])
            keep = draw_cells(shape, 1, lambda s: keep_mask(s, self.p, device=x.device)).view(x.shape)
            return x * keep.to(x.dtype).mul_(32768 / (32768 - thr))
        if x.device.type != "cpu":
            return super().forward(x)
        return x * keep_mask(x.shape, self.p, device=x.device).to(x.dtype).mul_(32768 / (32768 - thr))


def mlp(dims: Sequence[int], dropout: float = 0.0, last_activation: bool = False) -> nn.Sequential:
    """Linear layers dims[0] -> ... -> dims[-1], SELU (+ dropout) between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        is_last = i == len(dims) - 2
        if not is_last or last_activation:
            layers.append(nn.SELU())
            if dropout > 0:
                layers.append(Dropout(dropout))
    return nn.Sequential(*layers)


_mlp = mlp  # backwards-compatible name


class Encoder(nn.Module):
    """x (N, n_genes) -> z (N, latent). The last layer is linear (no activation)."""

    def __init__(
        self,
        n_genes: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        latent: int = DEFAULT_LATENT,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.n_genes, self.hidden, self.latent, self.dropout = n_genes, tuple(hidden), latent, dropout
        self.net = _mlp([n_genes, *hidden, latent], dropout, last_activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def hparams(self) -> dict:
        return {"n_genes": self.n_genes, "hidden": list(self.hidden), "latent": self.latent, "dropout": self.dropout}


class Decoder(nn.Module):
    """z (N, latent) -> x_hat (N, n_genes); mirror of the encoder, linear output."""

    def __init__(
        self,
        n_genes: int,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        latent: int = DEFAULT_LATENT,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.n_genes, self.hidden, self.latent, self.dropout = n_genes, tuple(hidden), latent, dropout
        self.net = _mlp([latent, *reversed(tuple(hidden)), n_genes], dropout, last_activation=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def hparams(self) -> dict:
        return {"n_genes": self.n_genes, "hidden": list(self.hidden), "latent": self.latent, "dropout": self.dropout}
