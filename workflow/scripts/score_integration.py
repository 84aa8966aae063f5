"""Integration scores (scib-metrics) of one method's embedding of a multi-batch dataset, one run.

A run's seed picks the random subsample of cells (``subsample`` fraction), so several runs give
Fig. 2's boxplots. One job may do several runs (``params.seeds`` + ``output.scores``): each
process pays scib-metrics' jax/numba compilation (about a minute on a laptop CPU) once, and runs
of equal size reuse much of it.

Snakemake interface:

    input:
        emb        results/embeddings/{method}/{dataset}.h5ad
        processed  results/data/{dataset}/processed.h5ad   (its X gives the pre-integrated PCA)
    params:
        method, dataset, seed   default: the wildcards of the same names (seed default 0)
        seeds         (instead of seed) list of run seeds, one record each, aligned with output.scores
        integration   dict of IntegrationConfig overrides: batch_key ("batch"), label_key ("cell_type"),
                      subsample (0.8), n_pcs (50), isolated_labels (False, as ssl_in_scg),
                      kbet_per_label (True), neighbors ("auto": exact up to exact_max_cells=50000,
                      else pynndescent)
        record_failures   default False
    output:
        score      results/scores/integration/{method}/{dataset}/{seed}.json
        scores     (instead of score) list of such paths, aligned with params.seeds
    log:
        optional, one file
"""

import os

# scib-metrics JIT-compiles with jax: a persistent cache shared by the jobs of a run pays it once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(".snakemake/jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

from scjepa.io import read_h5ad
from scjepa.contracts import read_embedding
from scjepa.tasks.common import run_score_seeds, smk_get
from scjepa.tasks.integration import IntegrationConfig, integration_run


def main(snakemake):
    p = snakemake.params
    cache: dict = {}

    def compute(method, dataset, seed):
        cfg = IntegrationConfig.from_dict(dict(smk_get(p, "integration", {}) or {}))
        if "adata" not in cache:  # read once per job, however many runs
            processed = read_h5ad(snakemake.input.processed)
            required = (cfg.batch_key, cfg.label_key)
            cache["X"] = processed.X
            cache["adata"] = read_embedding(snakemake.input.emb, processed.obs_names, required_obs=required)
        metrics, config = integration_run(
            cache["adata"], cache["X"], seed=0 if seed is None else seed, config=cfg, path=snakemake.input.emb
        )
        config["embedding"] = str(snakemake.input.emb)
        return metrics, config

    run_score_seeds(snakemake, "integration", compute)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
