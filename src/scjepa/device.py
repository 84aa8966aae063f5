"""Where torch computes: the one choice of device for training, embedding and fine-tuning."""

from __future__ import annotations


def resolve_device(name: str = "auto"):
    """``"auto"`` -> ``torch.device("cuda")`` where CUDA is available, else ``"cpu"``; any other name as given."""
    import torch  # here, not at the top: the score contracts import this module without needing torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def select_device(device: str | None = "auto") -> str:
    """:func:`resolve_device` as a string; None means ``"auto"`` (a config value left empty)."""
    return str(resolve_device(device or "auto"))
