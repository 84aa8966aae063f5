"""The score rules' entry points (``workflow/scripts/score_*.py`` are ``run(snakemake, <entry>)``).

Each reads the rule's files, computes one task's scores with its library module and writes one record per
run. Every setting comes from the rule's params, which the workflow fills from the validated config: the
schema is the one place that holds defaults. ``cell_type`` and ``split`` are the processed data's standard
columns (docs/CONTRACTS.md), not settings.
"""

from __future__ import annotations

import logging
from pathlib import Path

from scjepa.contracts import processed_obs_names, read_embedding
from scjepa.tasks.common import score_one, score_replicates

log = logging.getLogger(__name__)

LABEL_KEY, SPLIT_KEY = "cell_type", "split"


def _hierarchy(rule):
    from scjepa.ontology import load_hierarchy

    return load_hierarchy(rule.params.get("hierarchy"), rule.input.get("ontology"))


def budget_and_data(adata, provenance_json=None) -> dict:
    """The record's ``training`` (the embedding's model budget: steps, epochs, batch) and ``data`` (cells; source
    and, for the embedded world, its world seed, from the dataset's provenance.json), for table notes."""
    import json

    out = {}
    if "training" in adata.uns:
        out["training"] = {k: int(v) for k, v in dict(adata.uns["training"]).items()}
    data = {"n_cells": int(adata.n_obs)}
    if provenance_json:
        prov = json.loads(Path(provenance_json).read_text())
        data["source"] = prov.get("source")
        if isinstance(prov.get("synthetic"), dict) and "world_seed" in prov["synthetic"]:
            data["world_seed"] = int(prov["synthetic"]["world_seed"])
    out["data"] = data
    return out


def zero_shot_rule(rule) -> dict:
    """Rule ``score_zero_shot``: kNN (and a linear probe) from the reference split to the query split.

    input: ``emb``, ``processed`` (rows are checked against it), ``provenance`` (optional: the dataset's
    provenance.json, for the record's ``data``); params: ``k``, ``reference_split``,
    ``query_split``, ``probe``, ``seed`` (the probe's solver; the record's seed is null), ``hierarchy``.
    """
    from scjepa.tasks.knn import zero_shot, zero_shot_config

    p, emb = rule.params, rule.input["emb"]

    def compute(method, dataset, seed):
        adata = read_embedding(emb, processed_obs_names(rule.input["processed"]), required_obs=(LABEL_KEY, SPLIT_KEY))
        opts = dict(label_key=LABEL_KEY, split_key=SPLIT_KEY, ref_split=p["reference_split"],
                    query_split=p["query_split"], k=int(p["k"]), probe=bool(p["probe"]), seed=int(seed))
        hierarchy = _hierarchy(rule)
        metrics, _ = zero_shot(adata, path=emb, hierarchy=hierarchy, **opts)
        extra = {"hierarchy": hierarchy.config()} if hierarchy else {}
        extra.update(budget_and_data(adata, rule.input.get("provenance")))
        return metrics, zero_shot_config(**opts, embedding=str(emb), embedding_dim=int(adata.obsm["X_emb"].shape[1]),
                                         **extra)

    return score_one(rule, "zero_shot", compute, seed=int(p["seed"]), seed_in_record=False)


def finetune_rule(rule) -> list[dict]:
    """Rule ``score_finetune``: the pretrained encoder + a linear head, fully fine-tuned; one record per seed.

    All seeds of a (method, dataset) share the job: the dataset is read once. Every seed starts from the
    saved encoder and its own seed, so its record is the one a job of its own would write. A method without
    a torch encoder (PCA) gets an "n/a" record. input: ``processed``, ``model``, and ``store`` where the
    dataset is fine-tuned in bounded memory (``tasks.finetune.stream``: train and val batches from the store,
    test rows streamed from ``processed``; :mod:`scjepa.tasks.finetune_store`); params: ``finetune`` (the
    ``tasks.finetune`` settings and the device, plus ``store`` = the loader's settings on the store path),
    ``init`` ("pretrained" | "random"), ``seeds``, ``hierarchy``; output: ``scores`` and ``histories``
    (per-epoch CSVs), aligned with the seeds.
    """
    import pandas as pd
    import torch

    from scjepa.io import read_h5ad, write_text
    from scjepa.methods.base import read_genes
    from scjepa.tasks.finetune import FinetuneConfig, finetune_dataset, load_pretrained_encoder

    torch.set_num_threads(max(1, int(rule.threads)))  # the job's share of the node, not every core
    p, model_dir = rule.params, rule.input.get("model")
    cache: dict = {}

    def compute(method, dataset, seed, history=None):
        opts = dict(p["finetune"])
        store_opts = opts.pop("store", None)  # present on the store path only
        cfg = FinetuneConfig.from_dict(opts)
        # Load the encoder before the dataset: a method without one is n/a at no cost. A fresh copy for every
        # seed (fine-tuning changes it in place).
        encoder = load_pretrained_encoder(model_dir) if model_dir else None
        genes = read_genes(model_dir) if model_dir else None
        if "hierarchy" not in cache:
            cache["hierarchy"] = _hierarchy(rule)
        if rule.input.get("store"):  # bounded memory: X is never read whole
            from scjepa.tasks.finetune_store import finetune_store

            result, run_config = finetune_store(
                rule.input["store"], rule.input["processed"], model_dir, init=p["init"], seed=seed,
                label_key=LABEL_KEY, split_key=SPLIT_KEY, config=cfg, encoder=encoder, genes=genes,
                hierarchy=cache["hierarchy"], buffer_shards=int((store_opts or {}).get("buffer_shards", 4)))
        else:
            if "adata" not in cache:  # read once per job, however many seeds
                cache["adata"] = read_h5ad(rule.input["processed"])
            result, run_config = finetune_dataset(
                cache["adata"], model_dir, init=p["init"], seed=seed, label_key=LABEL_KEY, split_key=SPLIT_KEY,
                config=cfg, encoder=encoder, genes=genes, path=rule.input["processed"], hierarchy=cache["hierarchy"])
        if cache["hierarchy"]:
            run_config["hierarchy"] = cache["hierarchy"].config()
        if history:
            write_text(pd.DataFrame(result.history).to_csv(index=False, float_format="%.6g"), history)
        return result.metrics, run_config

    return score_replicates(rule, "finetune", compute, per_seed_outputs={"history": "histories"})


def integration_rule(rule) -> list[dict]:
    """Rule ``score_integration``: scib-metrics on a seeded subsample of cells; one record per run.

    All runs share the job, so scib-metrics' compilation is paid once. input: ``emb``, ``processed`` (its X gives
    the unintegrated PCs); params: ``integration`` (``tasks.integration`` but the number of runs), ``seeds``.
    """
    import os

    # scib-metrics JIT-compiles with jax: a persistent cache shared by the jobs of a run pays it once
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(".snakemake/jax_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    from scjepa.io import read_h5ad
    from scjepa.tasks.integration import IntegrationConfig, integration_run

    emb, cache = rule.input["emb"], {}

    def compute(method, dataset, seed):
        cfg = IntegrationConfig.from_dict(dict(rule.params["integration"]))
        if "adata" not in cache:  # read once per job, however many runs
            processed = read_h5ad(rule.input["processed"])
            cache["X"] = processed.X
            cache["adata"] = read_embedding(emb, processed.obs_names, required_obs=(cfg.batch_key, cfg.label_key))
        metrics, config = integration_run(cache["adata"], cache["X"], seed=seed, config=cfg, path=emb)
        return metrics, {**config, "embedding": str(emb)}

    return score_replicates(rule, "integration", compute)


def spatial_rule(rule) -> dict:
    """Rule ``score_spatial``: kNN within the tissue (reference split -> query split) and cross-platform
    transfer from the dissociated reference (its every cell), with per-cell predictions for Fig. 3.

    input: ``emb``, ``processed``, and ``ref_emb`` / ``ref_processed`` when the dataset names a reference;
    params: ``reference``, ``k``, ``reference_split``, ``query_split``, ``probe``, ``seed``, ``hierarchy``;
    output: ``score``, ``predictions``.
    """
    from scjepa.tasks.spatial import spatial_scores, write_predictions

    p, inp = rule.params, rule.input

    def compute(method, dataset, seed):
        spatial = read_embedding(inp["emb"], processed_obs_names(inp["processed"]), required_obs=(LABEL_KEY,))
        reference, ref_path = None, inp.get("ref_emb")
        if ref_path:
            reference = read_embedding(ref_path, processed_obs_names(inp["ref_processed"]), required_obs=(LABEL_KEY,))
        hierarchy = _hierarchy(rule)
        metrics, predictions, config = spatial_scores(
            spatial, reference, spatial_name=dataset, reference_name=p["reference"],
            label_key=LABEL_KEY, split_key=SPLIT_KEY, ref_split=p["reference_split"], query_split=p["query_split"],
            transfer_ref_split=None, k=int(p["k"]), probe=bool(p["probe"]), seed=int(seed),
            spatial_path=inp["emb"], reference_path=ref_path, hierarchy=hierarchy)
        write_predictions(predictions, rule.output["predictions"])
        if hierarchy:
            config["hierarchy"] = hierarchy.config()
        return metrics, {**config, "embedding": str(inp["emb"]), "reference_embedding": ref_path and str(ref_path)}

    return score_one(rule, "spatial", compute, seed=int(p["seed"]), seed_in_record=False)
