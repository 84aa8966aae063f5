"""Data integration (Fig. 2): scib-metrics' Benchmarker on one method's embedding of a multi-batch dataset.

Protocol (this repository's docs/PROTOCOL.md §3.4; where each choice comes from: its §5): batch and label
keys from the config; the pre-integrated embedding is the PCA of the dataset's log-normalised X,
computed here; exact (brute-force) kNN; scores read with ``get_results(min_max_scale=False)``; total =
0.6 bio-conservation + 0.4 batch-correction (scIB's weighting, computed by the Benchmarker). The
isolated-labels metric is off by default (config ``isolated_labels``).

One run = one seed = one random subsample of the cells (default 80 %), so repeated runs give the
spread that Fig. 2's boxplots show. Large datasets: a run takes at most ``max_cells`` cells (default
50,000), drawn stratified by batch x cell type (each stratum keeps its share of the cells, largest
remainders rounded up), because scib-metrics' cost grows faster than the cell count (kBET and BRAS per
label; this repository's benchmarks/RESULTS.md, 'Paper-scale evaluation costs') and exact neighbours stay affordable up to
50,000 cells. Below the cap the subsample is exactly the uncapped one.

Written against scib-metrics 0.5.x (``Benchmarker(adata, batch_key, label_key,
embedding_obsm_keys, bio_conservation_metrics, batch_correction_metrics,
pre_integrated_embedding_obsm_key, ...)``, ``prepare(neighbor_computer)``, ``benchmark()``), whose
batch-correction set is BRAS, iLISI, kBET per label, graph connectivity and PCR comparison.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from scjepa.contracts import EMBEDDING_KEY, labels_of
from scjepa.errors import InputError

log = logging.getLogger(__name__)

AGGREGATES = {"Bio conservation": "bio_conservation", "Batch correction": "batch_correction", "Total": "total"}
MAX_NEIGHBORS = 90  # the Benchmarker uses 15, 50 and 90 neighbours


@dataclass
class IntegrationConfig:
    """Options of one integration run (defaults: this repository's docs/PROTOCOL.md §3.4, CPU-friendly)."""

    batch_key: str = "batch"
    label_key: str = "cell_type"
    subsample: float = 0.8  # fraction of cells per run (1.0 = all; then runs differ only by PCA seed)
    n_pcs: int = 50  # of the pre-integrated PCA
    isolated_labels: bool = False  # off by default (this repository's docs/PROTOCOL.md §3.4)
    kbet_per_label: bool = True
    neighbors: str = "auto"  # "exact" | "pynndescent" | "auto" (exact up to exact_max_cells)
    exact_max_cells: int = 50_000
    max_cells: int | None = 50_000  # cells per run at most (stratified by batch x label); None = no cap

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "IntegrationConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown integration option(s) {sorted(unknown)}", key="integration")
        return cls(**d)


def subsample_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``round(fraction * n)`` of ``n`` cells."""
    if not 0 < fraction <= 1:
        raise ValueError(f"subsample fraction must be in (0, 1], got {fraction}")
    m = max(1, int(round(fraction * n)))
    if m == n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))


def stratified_subsample(strata: Sequence, m: int, seed: int) -> np.ndarray:
    """Sorted indices of ``m`` cells drawn (seeded) so that each stratum keeps its share of the cells.

    Stratum s of n_s cells (of n) gets floor(m n_s / n) cells, and the strata with the largest remainders
    one more each until m are drawn (ties: the larger stratum first, then the first in sorted order); the
    cells of each stratum are a seeded random draw without replacement.
    """
    strata = np.asarray(strata).astype(str)
    n = len(strata)
    if not 0 < m <= n:
        raise ValueError(f"cannot draw {m} of {n} cells")
    keys, codes, sizes = np.unique(strata, return_inverse=True, return_counts=True)
    quota = sizes * m / n
    take = np.floor(quota).astype(np.int64)
    short = m - int(take.sum())
    if short:
        order = np.lexsort((np.arange(len(keys)), -sizes, -(quota - take)))
        take[order[:short]] += 1
    rng = np.random.default_rng(seed)
    members = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    picked = [rng.choice(members[bounds[i]:bounds[i + 1]], size=int(t), replace=False)
              for i, t in enumerate(take) if t]
    return np.sort(np.concatenate(picked))


def run_indices(batch: Sequence, labels: Sequence, fraction: float, max_cells: int | None, seed: int) -> np.ndarray:
    """The cells of one run: the seeded ``fraction`` subsample, or, where that exceeds ``max_cells``,
    a batch x label stratified draw of ``max_cells`` cells (:func:`stratified_subsample`)."""
    n = len(batch)
    idx = subsample_indices(n, fraction, seed)
    if max_cells is None or len(idx) <= max_cells:
        return idx
    if max_cells < 1:
        raise ValueError(f"max_cells must be >= 1, got {max_cells}")
    strata = np.char.add(np.char.add(np.asarray(batch).astype(str), "\x1f"), np.asarray(labels).astype(str))
    return stratified_subsample(strata, int(max_cells), seed)


def pca_embedding(X, n_pcs: int = 50, seed: int = 0) -> np.ndarray:
    """The pre-integrated embedding: PCA (centred, arpack) of log-normalised X (dense or CSR)."""
    import scanpy as sc

    n_comps = int(min(n_pcs, X.shape[0] - 1, X.shape[1] - 1))
    if n_comps < 1:
        raise ValueError(f"cannot compute a PCA of a {X.shape} matrix")
    Xf = X.astype(np.float32) if hasattr(X, "astype") else np.asarray(X, dtype=np.float32)
    return np.asarray(sc.pp.pca(Xf, n_comps=n_comps, svd_solver="arpack", random_state=seed), dtype=np.float32)


def exact_neighbors(X: np.ndarray, k: int):
    """Exact Euclidean kNN of every row among all rows, self included (scib-metrics' contract)."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(X)
    dist, idx = nn.kneighbors(X)
    return NeighborsResults(indices=idx, distances=dist)


@contextlib.contextmanager
def _deterministic_scib(exact: bool, seed: int = 0):
    """Make scib-metrics' internals deterministic (and fast where exact search is affordable).

    - kBET-per-label re-embeds each label's subgraph with diffusion maps, whose eigenvectors come from
      ``scipy.sparse.linalg.eigsh`` without a start vector: SciPy >= 1.15 then draws one from fresh OS
      entropy, so the same data gave kBET scores differing by up to 0.02 between processes (measured).
      Inside this context ``eigsh`` gets a seeded start vector when the caller passes none (what
      scanpy's own diffusion map does).
    - With ``exact``, scib-metrics' internal approximate search (pynndescent, also used in those
      diffusion embeddings; its numba compilation costs about two minutes per process on a laptop
      CPU) is routed to exact search, which is what pynndescent approximates.
    """
    import scipy.sparse.linalg as sla
    import scib_metrics.nearest_neighbors as nn_mod

    original_eigsh, original_nn = sla.eigsh, nn_mod.pynndescent

    def seeded_eigsh(A, *args, **kwargs):
        if kwargs.get("v0") is None and kwargs.get("rng") is None and len(args) < 5:
            kwargs["v0"] = np.random.default_rng(seed).uniform(-1.0, 1.0, size=A.shape[0])
        return original_eigsh(A, *args, **kwargs)

    def exact_search(X, n_neighbors, random_state=0, n_jobs=1):  # pynndescent's signature
        return exact_neighbors(np.asarray(X), min(int(n_neighbors), len(X)))

    sla.eigsh = seeded_eigsh
    if exact:
        nn_mod.pynndescent = exact_search
    try:
        yield
    finally:
        sla.eigsh, nn_mod.pynndescent = original_eigsh, original_nn


@contextlib.contextmanager
def _incremental_full_collections():
    """Make the Benchmarker's full garbage collections cost what the last metric allocated.

    ``Benchmarker.prepare``/``benchmark`` call ``gc.collect()`` before every metric (to release the
    previous metric's device buffers); each call walks every object of the process (jax's tracing
    and lowering caches included: ~0.3 s a call, 11 calls a run, measured as 20 % of an integration
    job). Here each of those collections is followed by ``gc.freeze()``, so the next one walks only
    the objects created since: garbage is still collected (everything unreachable at the collection
    is freed as before); surviving objects are frozen until the context ends and ``gc.unfreeze()``
    hands them back to the collector. No metric changes (the scores do not depend on the collector).
    """
    import gc
    import types

    import scib_metrics.benchmark._core as core

    def collect_and_freeze(*args, **kwargs):
        found = gc.collect(*args, **kwargs)
        gc.freeze()
        return found

    original = getattr(core, "gc", None)
    if original is not gc:  # another scib-metrics layout: leave it alone
        yield
        return
    core.gc = types.SimpleNamespace(collect=collect_and_freeze)
    try:
        yield
    finally:
        core.gc = original
        gc.unfreeze()


def scib_scores(
    emb: np.ndarray,
    X_pre: np.ndarray,
    batch: Sequence,
    labels: Sequence,
    config: IntegrationConfig | None = None,
) -> dict[str, float]:
    """scib-metrics scores of one embedding (N, d) against the pre-integrated X_pre (N, p).

    Returns every individual metric under its scib-metrics name (e.g. ``silhouette_label``,
    ``nmi_ari_cluster_labels_kmeans_nmi``, ``bras``, ``ilisi_knn``, ``kbet_per_label``,
    ``graph_connectivity``, ``pcr_comparison``) plus ``bio_conservation``, ``batch_correction``
    and ``total``, all unscaled (``min_max_scale=False``).
    """
    import anndata as ad
    import pandas as pd
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    cfg = config or IntegrationConfig()
    emb = np.asarray(emb, dtype=np.float32)
    n = emb.shape[0]
    if n <= MAX_NEIGHBORS:
        raise ValueError(f"integration metrics need more than {MAX_NEIGHBORS} cells, got {n}")
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical(np.asarray(batch).astype(str)),
            "label": pd.Categorical(np.asarray(labels).astype(str)),
        },
        index=[str(i) for i in range(n)],
    )
    if obs["batch"].nunique() < 2:
        raise ValueError("integration metrics need at least two batches")
    adata = ad.AnnData(obs=obs)
    adata.obsm["X_emb"] = emb
    adata.obsm["X_pre"] = np.asarray(X_pre, dtype=np.float32)
    bm = Benchmarker(
        adata,
        batch_key="batch",
        label_key="label",
        embedding_obsm_keys=["X_emb"],
        bio_conservation_metrics=BioConservation(isolated_labels=cfg.isolated_labels),
        batch_correction_metrics=BatchCorrection(kbet_per_label=cfg.kbet_per_label),
        pre_integrated_embedding_obsm_key="X_pre",
        progress_bar=False,
    )
    use_exact = cfg.neighbors == "exact" or (cfg.neighbors == "auto" and n <= cfg.exact_max_cells)
    if cfg.neighbors not in ("exact", "pynndescent", "auto"):
        raise InputError(f"neighbors must be exact, pynndescent or auto, got {cfg.neighbors!r}", key="neighbors")
    with _deterministic_scib(use_exact), _incremental_full_collections():
        bm.prepare(neighbor_computer=exact_neighbors if use_exact else None)
        bm.benchmark()
    df = bm.get_results(min_max_scale=False, clean_names=False)
    row = df.loc["X_emb"]
    metrics: dict[str, float] = {}
    for name, value in row.items():
        key = AGGREGATES.get(name, name)
        metrics[str(key)] = float(value)
    return metrics


def integration_run(
    adata_emb,
    X,
    *,
    seed: int = 0,
    config: IntegrationConfig | None = None,
    emb_key: str = EMBEDDING_KEY,
    path=None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """One integration run: subsample cells (seeded), PCA of X inside, Benchmarker on the embedding.

    ``adata_emb``: the method's embedding AnnData (obs with batch and label columns);
    ``X``: the processed dataset's log-normalised expression, same rows. Returns
    ``(metrics, run_config)``; metrics as :func:`scib_scores` plus ``n_cells``, ``n_batches``,
    ``seconds``. The run's cells: :func:`run_indices` (``subsample``, capped at ``max_cells``).
    """
    cfg = config or IntegrationConfig()
    for col in (cfg.batch_key, cfg.label_key):
        if col not in adata_emb.obs:
            raise InputError(
                f"obs has no column '{col}' (integration needs batch and label keys)", path=path, column=col
            )
    if X.shape[0] != adata_emb.n_obs:
        raise InputError(f"expression has {X.shape[0]} rows but the embedding {adata_emb.n_obs}", path=path)
    labels = labels_of(adata_emb.obs, cfg.label_key, path=path)
    batch = labels_of(adata_emb.obs, cfg.batch_key, path=path)
    if len(set(batch)) < 2:
        raise InputError("has a single batch; integration needs a multi-batch dataset", path=path, column=cfg.batch_key)
    idx = run_indices(batch, labels, cfg.subsample, cfg.max_cells, seed)
    t0 = time.perf_counter()
    X_pre = pca_embedding(X[idx], cfg.n_pcs, seed=seed)
    emb = np.asarray(adata_emb.obsm[emb_key], dtype=np.float32)[idx]
    metrics = scib_scores(emb, X_pre, batch[idx], labels[idx], cfg)
    metrics.update(
        {"n_cells": float(len(idx)), "n_batches": float(len(set(batch[idx]))), "seconds": time.perf_counter() - t0}
    )
    import scib_metrics

    run_config = {
        **asdict(cfg),
        "seed": seed,
        "scib_metrics_version": scib_metrics.__version__,
        "pre_integrated": "PCA of X",
    }
    return metrics, run_config
