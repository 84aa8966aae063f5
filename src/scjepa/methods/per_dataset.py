"""Methods fitted on each evaluation dataset itself (scVI, Harmony): their shared checks and entry point.

These baselines are transductive: there is no pretrained model to apply to new data, so the workflow
calls :func:`embed_dataset` once per (method, dataset) (docs/PROTOCOL.md §2.4).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import numpy as np
import pandas as pd

from scjepa.errors import InputError
from scjepa.io import read_h5ad, write_h5ad
from scjepa.methods.registry import get_family

FAMILIES = ("scvi", "harmony", "control")
_META_KEYS = (
    "family", "method", "n_genes", "gene_ids_file",  # model-directory metadata (docs/CONTRACTS.md)
    "batches", "kl_warmup_epochs_effective", "n_pcs_effective",  # written by save()
)


def check_batch_column(adata, batch_key: str = "batch", *, path=None) -> pd.Categorical:
    """Return ``obs[batch_key]`` as a categorical of strings; InputError naming the column if unusable."""
    path = path if path is not None else getattr(adata, "filename", None)
    if batch_key not in adata.obs.columns:
        raise InputError(
            f"batch column is missing; obs columns present: {list(adata.obs.columns)}",
            path=path,
            column=batch_key,
        )
    col = adata.obs[batch_key]
    if col.isna().any():
        raise InputError(
            f"batch column has {int(col.isna().sum())} missing values", path=path, column=batch_key
        )
    return pd.Categorical(col.astype(str).to_numpy())


def split_hparams(hparams: Mapping[str, Any] | None, cls) -> dict:
    """Constructor kwargs of ``cls`` from a hparams dict; metadata keys dropped, unknown keys rejected."""
    hparams = dict(hparams or {})
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in hparams.items() if k not in _META_KEYS}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise InputError(
            f"unknown hyper-parameter(s) for {cls.__name__}: {unknown}; known: {sorted(names)}",
            key=unknown[0],
        )
    return kwargs


def make_method(family: str, hparams: Mapping[str, Any] | None = None, seed: int | None = None):
    """Build the method object of ``family`` ('scvi' or 'harmony') from a hparams dict."""
    if family not in FAMILIES:
        raise InputError(f"unknown transductive method family {family!r}; expected one of {FAMILIES}",
                         key="family")
    cls = get_family(family)
    kwargs = split_hparams(hparams, cls)
    if seed is not None:
        kwargs["seed"] = int(seed)
    return cls(**kwargs)


def embed_dataset(
    family: str,
    hparams: Mapping[str, Any] | None,
    data_h5ad: str | os.PathLike,
    out_h5ad: str | os.PathLike,
    model_dir: str | os.PathLike | None = None,
    seed: int = 0,
    num_threads: int | None = None,
) -> np.ndarray:
    """Fit ``family`` on the processed dataset ``data_h5ad`` and write its embedding to ``out_h5ad``.

    The output follows the embedding contract (docs/CONTRACTS.md): ``obs`` of the processed dataset (same
    order and index), ``obsm["X_emb"]`` float32 and finite, ``uns["method"]`` (the method name:
    ``hparams["method"]`` or the family), plus ``uns["method_config"]`` (JSON of family, seed and
    hyper-parameters). Written atomically; with ``model_dir`` the fitted model is saved there too.
    ``seed`` overrides any ``seed`` in ``hparams``. ``num_threads`` (e.g. Snakemake's ``threads``) sets
    torch's intra-op thread count for this process; on a CPU shared with other jobs, torch's default
    (all cores) oversubscribes and was ~4x slower per scVI epoch than one thread in our measurement.
    Returns the embedding.
    """
    import anndata as ad

    if num_threads is not None:
        import torch

        torch.set_num_threads(max(1, int(num_threads)))

    method = make_method(family, hparams, seed=seed)
    adata = read_h5ad(data_h5ad)
    Z = method.fit_transform(adata, path=data_h5ad)
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    if Z.shape[0] != adata.n_obs or not np.isfinite(Z).all():
        raise FloatingPointError(
            f"{family} embedding of {data_h5ad} is invalid (shape {Z.shape}, finite={np.isfinite(Z).all()})"
        )
    name = str((hparams or {}).get("method", family))
    out = ad.AnnData(obs=adata.obs.copy())
    out.obsm["X_emb"] = Z
    out.uns["method"] = name
    out.uns["method_config"] = json.dumps(
        {"family": family, "seed": int(seed), **method.get_params()}, sort_keys=True
    )
    if model_dir is not None:
        method.save(model_dir, method=name)
    write_h5ad(out, out_h5ad)
    return Z


def embed_rule(rule) -> np.ndarray:
    """Rules ``embed_scvi`` / ``embed_harmony`` / ``embed_control``: fit on ``input.data`` itself, write
    ``output.emb`` (and the fitted model in ``output.model``)."""
    hparams = {k: v for k, v in rule.params["hparams"].items() if k != "family"}
    hparams["method"] = rule.wildcards["method"]
    return embed_dataset(rule.params["family"], hparams, rule.input["data"], rule.output["emb"],
                         model_dir=rule.output["model"], seed=rule.params["seed"], num_threads=rule.threads)
