"""Embedding a user's data with a saved model: gene alignment, the (N, d) embedding, the contract file."""

from __future__ import annotations

import logging
import os

import numpy as np

from scjepa.errors import InputError
from scjepa.methods.registry import load_model

log = logging.getLogger(__name__)


def align_genes(X, var_names, gene_ids, *, min_overlap: float = 0.5, what: str = "data"):
    """Reorder the columns of X (N, len(var_names)) to ``gene_ids``; genes the data lacks are zero.

    Returns (X_aligned, coverage) with coverage = fraction of ``gene_ids`` found. The matching is the one
    preprocessing uses (``scjepa.data.genes.GeneSpace.alignment``): InputError on duplicate ids, no
    overlap, or coverage < min_overlap, naming ``what``.
    """
    import pandas as pd
    import scipy.sparse as sp

    from scjepa.data.genes import GeneSpace

    space = GeneSpace(gene_ids)
    if pd.Index(np.asarray(var_names).astype(str)).equals(space.ids):
        return X, 1.0
    al = space.alignment(var_names, path=what, min_coverage=min_overlap)
    if sp.issparse(X):
        return al.apply(X).astype(np.float32), al.coverage
    out = np.zeros((X.shape[0], len(space)), np.float32)
    out[:, al.dst_cols] = np.asarray(X)[:, al.src_cols]
    return out, al.coverage


def embed_adata(model_dir, adata, *, layer: str | None = None, min_overlap: float = 0.5) -> np.ndarray:
    """Embed a user's AnnData with a saved model: (n_obs, d) float32.

    ``model_dir``: a model directory (or a fitted method object). The data's var_names are aligned to the
    model's genes.txt (missing genes zero-filled; an error if fewer than ``min_overlap`` are present).
    X (or ``layers[layer]``) must be log1p(counts normalised to 1e4), as in training.
    """
    model = load_model(model_dir) if isinstance(model_dir, (str, os.PathLike)) else model_dir
    X = adata.layers[layer] if layer is not None else adata.X
    genes = getattr(model, "gene_ids_", None)
    if genes is None:
        n = getattr(model, "n_genes_", None)
        if n is not None and X.shape[1] != n:
            raise InputError(f"the data has {X.shape[1]} genes, the model {n}, and the model has "
                             "no genes.txt to align by")
    else:
        X, coverage = align_genes(X, adata.var_names, genes, min_overlap=min_overlap,
                                  what=str(getattr(adata, "filename", None) or "AnnData"))
        if coverage < 1:
            log.info("gene coverage %.1f%% (%d model genes zero-filled)", 100 * coverage,
                     round((1 - coverage) * len(genes)))
    return model.transform(X)


def embed_file(model_dir, data_h5ad, out_h5ad, *, layer: str | None = None) -> None:
    """Write the method contract: obs of ``data_h5ad`` + obsm["X_emb"] (float32) + uns["method"]."""
    import anndata as ad

    from scjepa.io import read_h5ad, write_h5ad
    from scjepa.methods.base import read_hparams

    adata = read_h5ad(data_h5ad)
    emb = np.ascontiguousarray(embed_adata(model_dir, adata, layer=layer), dtype=np.float32)
    if not np.isfinite(emb).all():
        raise InputError(f"the embedding has {int((~np.isfinite(emb)).any(1).sum())} non-finite rows",
                         path=data_h5ad)
    meta = read_hparams(model_dir)
    out = ad.AnnData(obs=adata.obs.copy(), obsm={"X_emb": emb})
    out.uns["method"] = meta.get("method") or meta["family"]
    budget = training_budget(model_dir, meta)
    if budget:
        out.uns["training"] = budget
    write_h5ad(out, out_h5ad)


def training_budget(model_dir, meta: dict | None = None) -> dict:
    """What the model was trained for, from its directory: ``steps`` and ``epochs`` done (the last row of
    curve.csv), ``batch_size``; empty for a model without a training curve (PCA). Score records carry it, so
    table notes say the budget the numbers come from."""
    import csv
    from pathlib import Path

    from scjepa.methods.base import read_hparams

    curve = Path(model_dir) / "curve.csv"
    if not curve.exists():
        return {}
    rows = list(csv.DictReader(curve.open()))
    if not rows:
        return {}
    meta = meta if meta is not None else read_hparams(model_dir)
    out = {"steps": int(float(rows[-1]["step"])), "epochs": int(float(rows[-1]["epoch"])) + 1}
    if meta.get("batch_size") is not None:
        out["batch_size"] = int(meta["batch_size"])
    return out


def embed_rule(rule) -> None:
    """Rule ``embed_<family>``: ``input.model`` embeds ``input.data`` into ``output.emb`` (the method contract)."""
    import torch

    torch.set_num_threads(max(1, int(rule.threads)))  # the job's share of the machine, not every core
    embed_file(rule.input["model"], rule.input["data"], rule.output["emb"])
    log.info("wrote %s", rule.output["emb"])
