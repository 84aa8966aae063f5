"""The method families: name -> class, and loading a fitted method from its model directory.

``FAMILIES`` maps a family name to its class, imported on first use from a "module:Class" path, so a
family's heavy dependencies (torch, scvi-tools) load only when it is used. A family class provides
``cls(**hparams)``, ``fit(train_loader, val=None, out_dir=None, *, gene_ids=None)``, ``transform(X)``,
``save(model_dir)`` (writing hparams.json with "family") and the classmethod ``load(model_dir)``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path

from scjepa.errors import InputError


class _Registry(Mapping):
    """name -> class, resolved lazily from "module:Class" strings."""

    def __init__(self, paths: dict[str, str]):
        self.paths = dict(paths)

    def __getitem__(self, name: str) -> type:
        if name not in self.paths:
            raise KeyError(f"unknown method family {name!r}; known: {sorted(self.paths)}")
        target = self.paths[name]
        if not isinstance(target, str):
            return target
        module, _, cls = target.partition(":")
        return getattr(importlib.import_module(module), cls)

    def __contains__(self, name) -> bool:
        return name in self.paths

    def __iter__(self):
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def register(self, name: str, target: str | type) -> None:
        """Add a family: ``register("mine", "mypkg.mine:MyMethod")`` (or the class itself)."""
        self.paths[name] = target


FAMILIES = _Registry({
    "scjepa": "scjepa.methods.scjepa:ScJEPA",
    "mae": "scjepa.methods.mae:MAE",
    "barlow_twins": "scjepa.methods.barlow:BarlowTwins",
    "supervised": "scjepa.methods.supervised:Supervised",
    "pca": "scjepa.methods.pca:PCAMethod",
    "scvi": "scjepa.methods.scvi:SCVIMethod",
    "harmony": "scjepa.methods.harmony:HarmonyMethod",
    "control": "scjepa.methods.controls:Control",
})
register_family = FAMILIES.register


def get_family(name: str) -> type:
    """The class of family ``name``; an InputError naming the key if it is unknown."""
    if name not in FAMILIES:
        raise InputError(f"unknown method family {name!r}; known: {sorted(FAMILIES)}", key="family")
    return FAMILIES[name]


def load_model(model_dir: str | os.PathLike):
    """The fitted method object saved in ``model_dir`` (``.transform(X) -> (N, d) float32``)."""
    from scjepa.methods.base import read_hparams

    return get_family(read_hparams(model_dir)["family"]).load(model_dir)


def load_encoder(model_dir: str | os.PathLike):
    """The trained ``scjepa.models.mlp.Encoder`` (eval mode, CPU); ValueError for non-torch methods."""
    import torch

    from scjepa.methods.base import ENCODER, read_hparams
    from scjepa.models.mlp import Encoder

    meta = read_hparams(model_dir)
    path = Path(model_dir) / ENCODER
    if "encoder" not in meta or not path.exists():
        raise ValueError(f"model '{model_dir}' (family {meta['family']!r}) has no torch encoder")
    enc = Encoder(**meta["encoder"])
    enc.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return enc.eval()
