"""Pretraining one method on the training store: the model directory the workflow's pretrain rule writes."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from scjepa.errors import InputError
from scjepa.methods.embedding import align_genes
from scjepa.methods.registry import get_family

log = logging.getLogger(__name__)


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
    freed memory for reuse (``engine.use_caching_malloc``; faster steps, peak memory is kept). Torch
    families read CSR batches densified on the device, with ``num_threads - 1`` loader workers
    (``engine.loader_settings``). Inside a data-parallel process group (``scjepa.methods.distributed``)
    every rank calls this; rank 0 alone reads the val cells and writes ``out_dir``. Returns the fitted
    method.
    """
    import torch

    from scjepa.device import resolve_device
    from scjepa.methods.engine import use_caching_malloc

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
        from scjepa.methods.engine import loader_settings

        settings = loader_settings(resolve_device(params.device), num_threads) if getattr(cls, "is_torch", False) else {}
        loader = StoreLoader(store_dir, batch_size=getattr(params, "batch_size", 1024), shuffle=True,
                             seed=int(seed), split="train", drop_last=family != "pca", **settings)
    gene_ids = getattr(loader, "gene_ids", None)
    n_genes = getattr(loader, "n_genes", None)
    from scjepa.models.distributed import rank_world

    main = rank_world()[0] == 0
    val = None
    if val_h5ad is not None and main:
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
    if not main:
        return method
    with atomic_path(out_dir, is_dir=True) as tmp:
        method.save(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it 0700; give it a normal directory's mode
    from scjepa.methods.engine import CHECKPOINT

    if not (work / CHECKPOINT).exists():
        shutil.rmtree(work, ignore_errors=True)
    return method


def pretrain_rule(rule) -> None:
    """Rule ``pretrain_<family>``: fit the method on the corpus' store and write its model directory; with
    ``resources.gpu`` > 1 a torch method trains on that many data-parallel ranks started by torchrun."""
    from scjepa.methods.registry import get_family

    kwargs = dict(hparams=dict(rule.params["hparams"]), store_dir=str(rule.input["store"]),
                  val_h5ad=rule.input.get("val"), out_dir=str(rule.output["model"]), seed=int(rule.params["seed"]),
                  method_name=rule.params["method"], num_threads=rule.threads)
    gpus = int(rule.resources.get("gpu", 0) or 0)
    if gpus > 1 and getattr(get_family(kwargs["hparams"]["family"]), "is_torch", False):
        from scjepa.methods.distributed import launch

        log.info("pretraining on %d data-parallel ranks (torchrun, DistributedDataParallel)", gpus)
        launch(gpus, kwargs)
    else:
        pretrain(**kwargs)
    log.info("wrote %s", rule.output["model"])
