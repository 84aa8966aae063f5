"""Methods: the family registry, pretraining, loading fitted models and embedding.

The code lives in :mod:`~scjepa.methods.registry` (families, loading), :mod:`~scjepa.methods.pretraining`,
:mod:`~scjepa.methods.embedding` and, for methods fitted on each evaluation dataset (scVI, Harmony),
:mod:`~scjepa.methods.per_dataset`; these are the public names.
"""

from scjepa.methods.embedding import align_genes, embed_adata, embed_file
from scjepa.methods.pretraining import pretrain
from scjepa.methods.registry import FAMILIES, get_family, load_encoder, load_model, register_family

__all__ = ["FAMILIES", "register_family", "get_family", "load_model", "load_encoder", "align_genes",
           "embed_adata", "pretrain", "embed_file"]
