"""Preprocessing (docs/PROTOCOL.md §1.2-1.5): checks, normalise to 1e4 + log1p, gene alignment, donor split.

Memory is bounded by ``chunk_size`` rows, never by the dataset: the raw file is read backed, each
chunk is checked, aligned to the corpus gene space and normalised, and appended to the output's
on-disk CSR matrices (``scjepa.io.CSRAppender``). Only ``obs`` (one row per cell)
is held whole.

Output contract: ``docs/CONTRACTS.md`` (processed dataset).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scjepa.data.genes import GeneSpace
from scjepa.data.splits import donor_split
from scjepa.errors import InputError
from scjepa.io import CSRAppender, atomic_path, read_h5ad

log = logging.getLogger(__name__)

#: standard obs column -> whether a dataset must map it
STANDARD_COLUMNS = ("cell_type", "cell_type_id", "batch", "donor", "time", "condition", "x", "y")
#: what a source X may hold: raw counts; library-size-normalised values, not log-transformed (preprocessing
#: rescales each cell to target_sum and applies log1p; no counts layer); log1p of normalised values (kept)
X_KINDS = ("counts", "normalized", "log1p_normalized")


@dataclass
class PreprocessConfig:
    """Knobs of preprocessing; every one is a config value (config/README.md)."""

    target_sum: float = 1e4
    chunk_size: int = 10_000
    min_coverage: float = 0.5
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    x_kind: str = "counts"  # what the source's X holds
    columns: Mapping[str, str | None] = field(default_factory=dict)  # standard name -> source column
    required: tuple[str, ...] = ("cell_type", "donor")
    keep_columns: tuple[str, ...] = ()  # extra source obs columns kept verbatim (ground truth, ...)
    keep_obsm: tuple[str, ...] = ()  # source obsm arrays kept verbatim (e.g. a generator's true state X_true)
    gene_id_column: str | None = None  # var column with gene ids; None = var_names
    matrix: str = "X"  # where the source keeps its values: X, raw.X or layers/<name>
    dataset: str = ""
    needs_split: bool = True  # a role reads the donor split: fewer than 3 donors is an error
    split_table: object = None  # pd.Series donor key -> split of another dataset (split_from), else a donor split
    split_on: tuple[str, ...] = ()  # obs columns forming the donor key of split_table
    split_unmatched: str = "exclude"
    split_source: str = ""  # the dataset split_table comes from (messages)
    fill_columns: Mapping[str, str] = field(default_factory=dict)  # kept column absent from the source -> constant
    derive: Mapping[str, Mapping] = field(default_factory=dict)  # derived obs columns (scjepa.data.derive)
    gene_symbol_case: str | None = None  # "upper": match the source's gene names upper-cased (mouse -> human)


def _iter_rows(X, n_obs: int, chunk: int) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    for start in range(0, n_obs, chunk):
        stop = min(start + chunk, n_obs)
        block = X[start:stop]
        if not sp.issparse(block):
            block = sp.csr_matrix(np.asarray(block))
        yield start, stop, sp.csr_matrix(block, dtype=np.float64)


def check_chunk(block: sp.csr_matrix, *, path, start: int, x_kind: str) -> None:
    """Raise InputError (naming the file and the first bad row) on NaN/inf/negative or non-counts."""
    data = block.data
    if data.size == 0:
        return
    bad = ~np.isfinite(data)
    if bad.any():
        row = start + int(np.searchsorted(block.indptr, np.flatnonzero(bad)[0], side="right") - 1)
        raise InputError(f"X contains NaN or inf (first at cell row {row})", path=path, column="X")
    if (data < 0).any():
        row = start + int(np.searchsorted(block.indptr, np.flatnonzero(data < 0)[0], side="right") - 1)
        raise InputError(f"X contains negative values (first at cell row {row})", path=path, column="X")
    if x_kind == "counts":
        frac = np.abs(data - np.round(data)) > 1e-6
        if frac.any():
            row = start + int(np.searchsorted(block.indptr, np.flatnonzero(frac)[0], side="right") - 1)
            raise InputError(
                "X is declared as counts (x_kind: counts) but holds non-integer values "
                f"(first at cell row {row}, value {data[frac][0]:.4g}); is it already normalised? "
                "Set the dataset's x_kind to 'normalized' (library-size normalised) or 'log1p_normalized', "
                "or point it at the raw counts.",
                path=path,
                column="X",
            )


def normalise_log1p(counts: sp.csr_matrix, target_sum: float) -> sp.csr_matrix:
    """log1p(counts / total * target_sum), row-wise; empty cells stay zero. float32 CSR."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    out = sp.diags(scale) @ counts
    out = sp.csr_matrix(out)
    np.log1p(out.data, out=out.data)
    return out.astype(np.float32)


def build_obs(raw_obs: pd.DataFrame, cfg: PreprocessConfig, path) -> pd.DataFrame:
    """Map source columns to the standard names; check presence, missing values and ids."""
    if raw_obs.index.has_duplicates:
        dup = raw_obs.index[raw_obs.index.duplicated()][0]
        raise InputError(f"duplicate cell ids in obs_names (e.g. '{dup}')", path=path, column="obs_names")
    obs = pd.DataFrame(index=raw_obs.index.astype(str))
    mapping = dict(cfg.columns)
    for std in STANDARD_COLUMNS:
        src = mapping.get(std)
        if src is None:
            if std in cfg.required:
                raise InputError(
                    f"the config maps no source column to '{std}', which this dataset's roles need",
                    path=path,
                    key=f"datasets.{cfg.dataset}.columns.{std}",
                )
            continue
        if src not in raw_obs.columns:
            raise InputError(
                f"column '{src}' (mapped to '{std}' in the config) is not in obs; obs has: "
                f"{', '.join(map(str, raw_obs.columns[:20]))}",
                path=path,
                column=src,
            )
        col = raw_obs[src]
        if col.isna().any():
            raise InputError(
                f"{int(col.isna().sum())} cells have a missing value in '{src}' (mapped to '{std}')",
                path=path,
                column=src,
            )
        if std in ("time", "x", "y"):
            try:
                obs[std] = pd.to_numeric(col).astype(np.float64).to_numpy()
            except (ValueError, TypeError) as exc:
                raise InputError(f"'{src}' (mapped to '{std}') must be numeric", path=path, column=src) from exc
        else:
            obs[std] = pd.Categorical(col.astype(str).to_numpy())
    if "batch" not in obs and "donor" in obs:
        obs["batch"] = obs["donor"]  # no study/batch column: donors are the batches
    for extra in cfg.keep_columns:
        if extra not in raw_obs.columns and extra in cfg.fill_columns:
            obs[extra] = np.full(len(obs), cfg.fill_columns[extra], dtype=object)  # e.g. a Census file's dataset id
            continue
        if extra not in raw_obs.columns:
            raise InputError(f"column '{extra}' listed in keep_columns is not in obs", path=path, column=extra)
        col = raw_obs[extra]  # a categorical stays categorical (missing values allowed, e.g. derived fates)
        obs[extra] = col.array if isinstance(col.dtype, pd.CategoricalDtype) else col.to_numpy()
    n_donors = obs["donor"].nunique() if "donor" in obs else 0
    if cfg.split_table is not None:  # split_from: the other dataset's split, donor by donor (scjepa.data.leakage)
        from scjepa.data.leakage import SPLIT_CATEGORIES, splits_from

        keyed = pd.DataFrame(index=obs.index)
        for c in cfg.split_on:  # a kept column, else the source's, else a constant (missing: splits_from says so)
            if c in obs or c in raw_obs.columns:
                keyed[c] = np.asarray(obs[c] if c in obs else raw_obs[c]).astype(str)
            elif c in cfg.fill_columns:
                keyed[c] = cfg.fill_columns[c]
        obs["split"] = pd.Categorical(
            splits_from(keyed, cfg.split_table, cfg.split_on, unmatched=cfg.split_unmatched, path=path,
                        source=f"dataset '{cfg.split_source}'", key=f"datasets.{cfg.dataset}.split_from"),
            categories=list(SPLIT_CATEGORIES),
        )
    elif "donor" in obs and not cfg.needs_split and n_donors < 3:
        log.info("%s: %d donor(s) and no role that reads a donor split: no 'split' column", path, n_donors)
    elif "donor" in obs:
        obs["split"] = pd.Categorical(
            donor_split(obs["donor"].to_numpy(), cfg.split_fractions, cfg.split_seed, path=path),
            categories=["train", "val", "test"],
        )
    return obs


def _open_matrix(f: h5py.File, raw, matrix: str, path):
    """The source matrix as a row-sliceable on-disk object, and the var table that goes with it.

    ``raw.X`` is read from either layout anndata has written: ``raw/X`` (anndata >= 0.7) or the
    top-level ``raw.X`` / ``raw.var`` of older files (anndata itself still reads those).
    """
    from anndata.io import read_elem, sparse_dataset

    if matrix == "X":
        keys, var = ("X",), raw.var
    elif matrix == "raw.X":
        keys = ("raw/X", "raw.X")
        var = None
        for vkey in ("raw/var", "raw.var"):
            if vkey in f:
                try:
                    var = read_elem(f[vkey])
                except Exception:  # a pre-0.7 compound dataset: let anndata's legacy reader parse it
                    var = raw.raw.var if raw.raw is not None else None
                break
    elif matrix.startswith("layers/"):
        keys, var = (matrix,), raw.var
    else:
        raise InputError(f"unknown matrix '{matrix}' (X, raw.X or layers/<name>)", key="matrix")
    key = next((k for k in keys if k in f), None)
    if key is None:
        raise InputError(f"has no '{keys[0]}' (the config's matrix: {matrix}); it has: {', '.join(f.keys())}",
                         path=path, key="matrix")
    if var is None:
        raise InputError(f"has '{key}' but no gene table for it (raw/var or raw.var)", path=path, key="matrix")
    node = f[key]
    if isinstance(node, h5py.Group):
        try:
            X = sparse_dataset(node)
        except Exception:  # pre-0.7 sparse encoding: anndata's backed reader still opens it
            X = raw.raw.X if key.startswith("raw") else node
    else:
        X = node
    if X.shape[0] != raw.n_obs:
        raise InputError(f"'{key}' has {X.shape[0]} rows but obs has {raw.n_obs}", path=path, column=key)
    return X, var


def _kept_obsm(raw, cfg: PreprocessConfig, path) -> dict:
    """The source's obsm arrays named in ``keep_obsm`` (one row per cell, in order), as float32."""
    out = {}
    for key in cfg.keep_obsm:
        if key not in raw.obsm:
            raise InputError(f"obsm '{key}' listed in keep_obsm is not in the source (obsm: {list(raw.obsm)})",
                             path=path, key=f"datasets.{cfg.dataset}.keep_obsm")
        arr = np.asarray(raw.obsm[key], dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != raw.n_obs:
            raise InputError(f"obsm '{key}' has shape {arr.shape}, expected ({raw.n_obs}, d)", path=path)
        out[key] = arr
    return out


def preprocess(
    raw_path: str | Path,
    gene_space: GeneSpace,
    out_path: str | Path,
    cfg: PreprocessConfig,
    *,
    raw_sha256: str | None = None,
    source: str | None = None,
    progress: bool = True,
) -> dict:
    """Preprocess ``raw_path`` into ``out_path`` (atomic). Returns the provenance dict."""
    import anndata as ad
    from tqdm.auto import tqdm

    raw_path, out_path = Path(raw_path), Path(out_path)
    if cfg.x_kind not in X_KINDS:
        raise InputError(f"unknown x_kind '{cfg.x_kind}' (one of {X_KINDS})", key=f"datasets.{cfg.dataset}.x_kind")
    raw = read_h5ad(raw_path, backed="r")
    src_file = h5py.File(raw_path, "r")
    try:
        n_obs = raw.n_obs
        if n_obs == 0:
            raise InputError("has no cells", path=raw_path)
        X_src, src_var = _open_matrix(src_file, raw, cfg.matrix, raw_path)
        if cfg.gene_id_column is None:
            gene_ids = pd.Index(src_var.index.astype(str))
        else:
            if cfg.gene_id_column not in src_var.columns:
                raise InputError("gene id column not found in var", path=raw_path, column=cfg.gene_id_column)
            gene_ids = pd.Index(src_var[cfg.gene_id_column].astype(str))
        symbols = next((src_var[c] for c in ("gene_symbol", "feature_name") if c in src_var), None)
        if cfg.gene_symbol_case == "upper":  # e.g. mouse symbols in a human gene space (1:1 orthologs by name)
            gene_ids = pd.Index(gene_ids.str.upper())
            symbols = None if symbols is None else symbols.astype(str).str.upper()
        elif cfg.gene_symbol_case not in (None, ""):
            raise InputError(f"gene_symbol_case must be 'upper' or null, got {cfg.gene_symbol_case!r}",
                             key=f"datasets.{cfg.dataset}.gene_symbol_case")
        if len(gene_ids) != X_src.shape[1]:
            raise InputError(f"var has {len(gene_ids)} genes but {cfg.matrix} has {X_src.shape[1]} columns",
                             path=raw_path, column=cfg.matrix)
        align = gene_space.alignment(gene_ids, path=raw_path, min_coverage=cfg.min_coverage,
                                     source_symbols=symbols, key=f"datasets.{cfg.dataset}" if cfg.dataset else None)
        from scjepa.data.derive import derive_columns

        raw_obs = derive_columns(raw.obs, raw.obsm, cfg.derive, path=raw_path, dataset=cfg.dataset)
        obs = build_obs(raw_obs, cfg, raw_path)

        var = pd.DataFrame(
            {"gene_symbol": gene_space.symbols, "present": align.present},
            index=pd.Index(gene_space.ids, name="gene_id"),
        )
        provenance = {
            "dataset": cfg.dataset,
            "source": source or "",
            "sha256": raw_sha256 or "",
            "x_kind": cfg.x_kind,
            "n_cells": int(n_obs),
            "n_genes_source": int(len(gene_ids)),
            "n_genes_matched": int(align.n_matched),
            "gene_coverage": float(align.coverage),
            "matched_by": align.matched_by,
            "n_genes_by_id": int(align.n_by_id),
            "n_genes_by_symbol": int(align.n_by_symbol),
            "n_ambiguous_symbols": len(align.ambiguous_symbols),
            "ambiguous_symbols_examples": list(align.ambiguous_symbols[:10]),
            "matrix": cfg.matrix,
            "target_sum": float(cfg.target_sum),
            "raw_file": str(raw_path),
        }
        n_vars = len(gene_space.ids)
        with atomic_path(out_path) as tmp:
            # Write the small parts with anndata, then stream X / counts into on-disk CSR.
            skeleton = ad.AnnData(obs=obs, var=var, obsm=_kept_obsm(raw, cfg, raw_path))
            skeleton.uns["provenance"] = provenance
            skeleton.uns["dataset"] = cfg.dataset
            skeleton.write_h5ad(tmp)
            with h5py.File(tmp, "a") as f:
                has_counts = cfg.x_kind == "counts"
                X_out = CSRAppender(f, "X", n_vars)
                C_out = CSRAppender(f["layers"], "counts", n_vars) if has_counts else None
                bar = tqdm(total=n_obs, desc=f"preprocess {cfg.dataset}", unit="cells", disable=not progress)
                for start, stop, block in _iter_rows(X_src, n_obs, cfg.chunk_size):
                    check_chunk(block, path=raw_path, start=start, x_kind=cfg.x_kind)
                    aligned = align.apply(block)
                    if has_counts:
                        C_out.append(aligned.astype(np.float32))
                        X_out.append(normalise_log1p(aligned, cfg.target_sum))
                    elif cfg.x_kind == "normalized":  # rescaled to target_sum on the aligned genes, as counts are
                        X_out.append(normalise_log1p(aligned, cfg.target_sum))
                    else:
                        X_out.append(aligned.astype(np.float32))
                    bar.update(stop - start)
                bar.close()
        log.info("wrote %s: %d cells x %d genes, coverage %.3f", out_path, n_obs, n_vars, align.coverage)
        return provenance
    finally:
        src_file.close()
        if getattr(raw, "file", None) is not None:
            raw.file.close()


def split_fractions(spec: Mapping, settings: Mapping) -> tuple[float, float, float]:
    """A dataset's train/val/test fractions: its own ``split_fractions`` if set, else ``preprocess.split_fractions``."""
    return tuple(spec.get("split_fractions") or settings["split_fractions"])


def preprocess_dataset(spec: Mapping, settings: Mapping, raw_path, provenance_path, genes_path, out_path, *,
                       progress: bool = True, split_source=None) -> dict:
    """The ``preprocess`` rule: one dataset's config entry (``spec``, with its name under ``dataset``) and
    the run's ``preprocess:`` settings -> ``out_path``. ``split_source``: the processed h5ad of the
    dataset named by ``spec["split_from"]`` (its split is taken, :mod:`scjepa.data.leakage`).

    Errors are reported as the user's config and files name things: ``datasets.<name>.<key>``, and a
    local source's own file instead of the workflow's copy of it.
    """
    import json

    from scjepa.config import ROLE_COLUMNS, SPLIT_ROLES

    name = spec["dataset"]
    prov = json.loads(Path(provenance_path).read_text())
    cols = dict(spec.get("columns", {}))
    gene_id_column = cols.pop("gene_ids", None)
    roles = list(spec["roles"])
    cfg = PreprocessConfig(
        target_sum=settings["target_sum"],
        chunk_size=settings["chunk_size"],
        min_coverage=spec["min_coverage"] if spec.get("min_coverage") is not None else settings["min_coverage"],
        split_fractions=split_fractions(spec, settings),
        split_seed=settings["split_seed"],
        x_kind=prov.get("x_kind", spec.get("x_kind", "counts")),
        columns=cols,
        required=tuple(sorted({c for r in roles for c in ROLE_COLUMNS[r]})),
        keep_columns=tuple(spec.get("keep_columns", [])),
        keep_obsm=tuple(spec.get("keep_obsm") or []),
        gene_id_column=gene_id_column,
        matrix=prov.get("matrix", spec.get("matrix", "X")),  # a concatenation keeps its counts in X
        dataset=name,
        needs_split=any(r in SPLIT_ROLES for r in roles),
        derive=dict(spec.get("derive") or {}),
        gene_symbol_case=spec.get("gene_symbol_case"),
    )
    split_from = spec.get("split_from") or None
    if spec.get("source") == "census" and spec.get("census_dataset_id"):
        cfg.fill_columns = {"dataset_id": str(spec["census_dataset_id"])}
    if split_from:
        from scjepa.data.leakage import read_obs_columns, split_table

        if not split_source:
            raise InputError("split_from is set but the processed dataset it names was not given",
                             key=f"datasets.{name}.split_from")
        on = tuple(split_from.get("by") or ("dataset_id", "donor_id"))
        src_obs = read_obs_columns(split_source, (*on, "split"),
                                   key=f"datasets.{split_from['dataset']}.keep_columns")
        cfg.split_table = split_table(src_obs, on, path=split_source)
        cfg.split_on, cfg.split_unmatched = on, split_from.get("unmatched", "exclude")
        cfg.split_source = split_from["dataset"]
    copies = {str(raw_path): prov["origin"]} if prov.get("source") == "local" and prov.get("origin") else {}
    try:
        return preprocess(raw_path, GeneSpace.read(genes_path), out_path, cfg, raw_sha256=prov.get("sha256"),
                          source=spec["source"], progress=progress)
    except InputError as exc:
        raise exc.for_dataset(name, copies=copies) from None


def preprocess_rule(rule) -> dict:
    """Rule ``preprocess``: :func:`preprocess_dataset` on the rule's files."""
    provenance = preprocess_dataset(rule.params["spec"], rule.params["preprocess"], rule.input["raw"],
                                    rule.input["provenance"], rule.input["genes"], rule.output["processed"],
                                    split_source=rule.input.get("split_source"))
    log.info("provenance: %s", provenance)
    return provenance
