"""Methods: the family registry, loading fitted models, pretraining and embedding.

``FAMILIES`` maps a family name to its class, imported on first use from a "module:Class" path, so a
family's heavy dependencies (torch, scvi-tools) load only when it is used. A family class provides
``cls(**hparams)``, ``fit(train_loader, val=None, out_dir=None, *, gene_ids=None)``, ``transform(X)``,
``save(model_dir)`` (writing hparams.json with "family") and the classmethod ``load(model_dir)``.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from scjepa.errors import InputError

log = logging.getLogger(__name__)


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


def _read_val(val_h5ad, gene_ids, n_genes: int, max_cells: int, seed: int):
    """(X, labels) of up to ``max_cells`` val cells of the processed corpus, aligned to the training genes."""
    from scjepa.io import read_h5ad

    adata = read_h5ad(val_h5ad, backed="r")
    for col in ("split", "cell_type"):
        if col not in adata.obs:
            raise InputError("missing obs column", path=val_h5ad, column=col)
    idx = np.flatnonzero((adata.obs["split"].astype(str) == "val").to_numpy())
    if len(idx) < 2:
        log.warning("%s has %d val cells: no val kNN curve", val_h5ad, len(idx))
        return None
    idx = np.sort(np.random.default_rng(seed).permutation(idx)[:max_cells])
    sub = adata[idx].to_memory()
    adata.file.close()
    X = sub.X
    if gene_ids is not None:
        X, _ = align_genes(X, sub.var_names, gene_ids, what=str(val_h5ad))
    elif X.shape[1] != n_genes:
        raise InputError(f"has {X.shape[1]} genes, the training store {n_genes}", path=val_h5ad)
    return X, sub.obs["cell_type"].astype(object).to_numpy()


def pretrain(hparams: dict, store_dir, val_h5ad, out_dir, seed: int, method_name: str, *,
             loader=None, work_dir=None, num_threads: int | None = None, tune_malloc: bool = True):
    """Fit family ``hparams["family"]`` on the training store and write the model directory ``out_dir``.

    Checkpoints go to ``work_dir`` (default: the hidden sibling ``.<out_dir name>.work``, which survives
    a failed job so a rerun resumes from it); ``out_dir`` appears atomically at the end. The final
    checkpoint stays in the work directory: a scheduler killed after the model was written but before it
    recorded the job as done deletes ``out_dir`` and reruns the job, which then resumes at the last step
    instead of training again (delete the work directory to reclaim its space). A work directory without
    a checkpoint (PCA) is removed. ``loader`` replaces the store loader (tests, custom data). ``num_threads``
    (Snakemake's ``threads``) sets torch's intra-op threads. On CPU, ``tune_malloc`` makes the process keep
    freed memory for reuse (``engine.use_caching_malloc``; faster steps, peak memory is kept). Returns the
    fitted method.
    """
    import torch

    from scjepa.methods.engine import resolve_device, use_caching_malloc

    if num_threads is not None:
        torch.set_num_threads(max(1, int(num_threads)))
    from dataclasses import fields

    from scjepa.io import atomic_path

    hp = dict(hparams)
    family = hp.pop("family", None)
    if family is None:
        raise InputError("hparams have no 'family'", key="family")
    hp.pop("method", None)
    cls = get_family(family)
    hp_cls = getattr(cls, "HParams", None)
    if hp_cls is not None and "seed" in {f.name for f in fields(hp_cls)}:
        hp["seed"] = int(seed)
    method = cls(**hp)
    method.method_name = method_name
    params = getattr(method, "hparams", getattr(method, "config", None))
    if tune_malloc and resolve_device(getattr(params, "device", "cpu")).type == "cpu":
        use_caching_malloc()
    if loader is None:
        from scjepa.data.store import StoreLoader

        # PCA sees every cell once (its partial_fit takes any batch size); the SGD methods drop the
        # last partial batch so every step has the same size.
        loader = StoreLoader(store_dir, batch_size=getattr(params, "batch_size", 1024), shuffle=True,
                             seed=int(seed), split="train", drop_last=family != "pca")
    gene_ids = getattr(loader, "gene_ids", None)
    n_genes = getattr(loader, "n_genes", None)
    val = None
    if val_h5ad is not None:
        val = _read_val(val_h5ad, gene_ids, n_genes, getattr(params, "val_max_cells", 20_000), int(seed))
        if gene_ids is None and val is not None:
            from scjepa.io import read_h5ad

            a = read_h5ad(val_h5ad, backed="r")
            gene_ids = [str(g) for g in a.var_names]
            a.file.close()
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir is not None else out_dir.parent / f".{out_dir.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    log.info("pretraining %s (family %s, seed %s) -> %s", method_name, family, seed, out_dir)
    method.fit(loader, val=val, out_dir=work, gene_ids=gene_ids)
    with atomic_path(out_dir, is_dir=True) as tmp:
        method.save(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it 0700; give it a normal directory's mode
    from scjepa.methods.engine import CHECKPOINT

    if not (work / CHECKPOINT).exists():
        shutil.rmtree(work, ignore_errors=True)
    return method


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
    write_h5ad(out, out_h5ad)


__all__ = ["FAMILIES", "register_family", "get_family", "load_model", "load_encoder", "align_genes",
           "embed_adata", "pretrain", "embed_file"]
