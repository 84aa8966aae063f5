"""The scTab corpus as a Census query (``source: census_query``): scTab's filters, streamed in chunks.

scTab built its corpus from CELLxGENE Census 2023-05-15 (its ``01_download_data`` notebook): the obs table
of ``Homo sapiens`` read with a value filter (primary data, 10x assays), cell types kept when they have
enough cells and enough tech_samples (``dataset_id`` + ``_`` + ``donor_id``) and sit deep enough below
"native cell" in the Cell Ontology, then raw counts of those cells fetched with ``get_anndata`` for its
protein-coding genes. :func:`fetch_census_query` does the same with the ``cellxgene_census`` API:

1. ``open_soma(census_version=...)``, then ``census["census_data"]["homo_sapiens"].obs.read(value_filter=...,
   column_names=...)`` -- obs only (a few GB for 22M cells, never X);
2. the type filters of :func:`select_cells` (cells per type, tech_samples per type, and, given the Cell
   Ontology, descendants of ``ontology_root`` with at least ``min_ancestors`` ancestors);
3. ``get_anndata(census, organism, X_name="raw", obs_coords=<chunk of soma_joinids>, var_value_filter=...)``
   chunk by chunk, each chunk appended to the output's on-disk CSR (``scjepa.io.CSRAppender``): memory is
   bounded by ``chunk_cells`` rows whatever the corpus size.

The output is the corpus as ``config/README.md`` describes the manual export: counts in ``X``, var
``feature_id``/``feature_name``, obs ``soma_joinid``, ``cell_type``, ``cell_type_ontology_term_id``,
``dataset_id``, ``donor_id``, ``assay``, ``tech_sample``; written under a temporary name and renamed.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from scjepa.errors import InputError

log = logging.getLogger(__name__)

#: our reading of scTab's assay filter: every 10x protocol the Census names
TENX_ASSAYS = ("10x 3' v1", "10x 3' v2", "10x 3' v3", "10x 5' v1", "10x 5' v2", "10x 3' transcription profiling",
               "10x 5' transcription profiling")
DEFAULT_OBS_FILTER = "is_primary_data == True and assay in " + str(list(TENX_ASSAYS))
OBS_COLUMNS = ("soma_joinid", "cell_type", "cell_type_ontology_term_id", "dataset_id", "donor_id", "assay",
               "tissue", "is_primary_data")
DEFAULTS = {"organism": "Homo sapiens", "obs_filter": DEFAULT_OBS_FILTER, "min_cells_per_type": 5000,
            "min_tech_samples_per_type": 31, "ontology_root": "CL:0000003", "min_ancestors": 8,
            "genes_file": None, "chunk_cells": 100_000}


def select_cells(obs: pd.DataFrame, *, min_cells_per_type: int, min_tech_samples_per_type: int,
                 ontology=None, ontology_root: str | None = None, min_ancestors: int = 0) -> pd.DataFrame:
    """scTab's cell-type filters on an obs table; returns the kept rows with ``tech_sample`` added.

    A type is kept when it has at least ``min_cells_per_type`` cells and ``min_tech_samples_per_type``
    tech_samples, and, with an ``ontology`` (:class:`scjepa.ontology.Ontology`), when its term lies below
    ``ontology_root`` and has at least ``min_ancestors`` ancestors. A type whose term the ontology lacks is
    dropped (and counted in the log).
    """
    for col in ("cell_type", "cell_type_ontology_term_id", "dataset_id", "donor_id"):
        if col not in obs:
            raise InputError(f"the Census obs table has no column '{col}'", column=col)
    obs = obs.copy()
    obs["tech_sample"] = obs["dataset_id"].astype(str) + "_" + obs["donor_id"].astype(str)
    per_type = obs.groupby("cell_type_ontology_term_id", observed=True).agg(
        n_cells=("tech_sample", "size"), n_tech_samples=("tech_sample", "nunique"))
    keep = (per_type["n_cells"] >= min_cells_per_type) & (per_type["n_tech_samples"] >= min_tech_samples_per_type)
    if ontology is not None:
        in_onto = np.array([t in ontology for t in per_type.index])
        if (~in_onto).any():
            log.info("%d cell type(s) not in the ontology dropped: %s", int((~in_onto).sum()),
                     ", ".join(map(str, per_type.index[~in_onto][:5])))
        deep = np.array([t in ontology and (ontology_root is None or ontology.is_descendant(t, ontology_root))
                         and len(ontology.ancestors(t)) >= min_ancestors for t in per_type.index])
        keep &= deep
    kept_types = per_type.index[keep]
    out = obs[obs["cell_type_ontology_term_id"].isin(kept_types)]
    log.info("%d of %d cell types, %d of %d cells kept", len(kept_types), len(per_type), len(out), len(obs))
    if out.empty:
        raise InputError("no cell type passes the corpus filters; check census_query's thresholds",
                         key="census_query")
    return out


def fetch_census_query(settings: Mapping[str, Any], census_version: str, dest: str | os.PathLike, *,
                       ontology_path=None, progress: bool = True) -> dict:
    """Run the corpus query at ``census_version`` into ``dest``; return its provenance (cells, types, genes,
    the filters). ``settings``: the dataset's ``census_query`` (keys of :data:`DEFAULTS`)."""
    import anndata as ad
    import h5py
    from tqdm.auto import tqdm

    from scjepa.io import CSRAppender, atomic_path

    cfg = {**DEFAULTS, **{k: v for k, v in dict(settings or {}).items() if v is not None}}
    try:
        census_mod = importlib.import_module("cellxgene_census")
    except ImportError as exc:
        raise ImportError("source: census_query needs the cellxgene-census package: pip install 'scjepa[census]'") from exc
    ontology = None
    if ontology_path:
        from scjepa.ontology import load_obo

        ontology = load_obo(ontology_path)
    genes = None
    if cfg["genes_file"]:
        from scjepa.data.genes import GeneSpace

        genes = list(GeneSpace.read(cfg["genes_file"]).ids)
    organism_key = str(cfg["organism"]).lower().replace(" ", "_")
    chunk = int(cfg["chunk_cells"])
    with census_mod.open_soma(census_version=str(census_version)) as census:
        obs = (census["census_data"][organism_key].obs
               .read(value_filter=cfg["obs_filter"], column_names=list(OBS_COLUMNS)).concat().to_pandas())
        log.info("Census %s: %d cells pass '%s'", census_version, len(obs), cfg["obs_filter"])
        obs = select_cells(obs, min_cells_per_type=int(cfg["min_cells_per_type"]),
                           min_tech_samples_per_type=int(cfg["min_tech_samples_per_type"]), ontology=ontology,
                           ontology_root=cfg["ontology_root"], min_ancestors=int(cfg["min_ancestors"]))
        obs = obs.sort_values("soma_joinid").reset_index(drop=True)
        var_filter = None if genes is None else f"feature_id in {genes}"
        ids = obs["soma_joinid"].to_numpy()
        dest = Path(dest)
        var, f = None, None
        with atomic_path(dest) as tmp:
            try:
                bar = tqdm(total=len(ids), desc="census corpus", unit="cells", disable=not progress)
                for start in range(0, len(ids), chunk):
                    coords = ids[start:start + chunk]
                    block = census_mod.get_anndata(census, cfg["organism"], X_name="raw", obs_coords=coords.tolist(),
                                                   var_value_filter=var_filter, obs_column_names=["soma_joinid"],
                                                   var_column_names=["feature_id", "feature_name"])
                    if not np.array_equal(np.asarray(block.obs["soma_joinid"]), coords):
                        raise InputError("the Census returned cells out of the requested order", key="census_query")
                    if var is None:
                        var = block.var[["feature_id", "feature_name"]].reset_index(drop=True)
                        var.index = var.index.astype(str)
                        skeleton = ad.AnnData(obs=_obs_frame(obs), var=var)
                        skeleton.uns["census_query"] = {"census_version": str(census_version),
                                                        **{k: str(v) for k, v in cfg.items()}}
                        skeleton.write_h5ad(tmp)
                        f = h5py.File(tmp, "a")
                        appender = CSRAppender(f, "X", len(var))
                    elif not np.array_equal(block.var["feature_id"].to_numpy(), var["feature_id"].to_numpy()):
                        raise InputError("the Census returned another gene order for a later chunk", key="census_query")
                    appender.append(block.X)
                    bar.update(len(coords))
                bar.close()
            finally:
                if f is not None:
                    f.close()
    return {"n_cells": int(len(ids)), "n_cell_types": int(obs["cell_type"].nunique()),
            "n_genes": int(0 if var is None else len(var)), "census_version": str(census_version),
            "filters": {k: cfg[k] for k in ("obs_filter", "min_cells_per_type", "min_tech_samples_per_type",
                                           "ontology_root", "min_ancestors")},
            "ontology": None if ontology is None else ontology.source}


def _obs_frame(obs: pd.DataFrame) -> pd.DataFrame:
    out = obs.copy()
    out.index = out["soma_joinid"].astype(str).to_numpy()
    for c in out.columns:
        if out[c].dtype == object or str(out[c].dtype) == "string":
            out[c] = pd.Categorical(out[c].astype(str))
    return out


__all__ = ["TENX_ASSAYS", "DEFAULT_OBS_FILTER", "DEFAULTS", "select_cells", "fetch_census_query"]
