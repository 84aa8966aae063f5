"""Integration scores (scib-metrics) of one method's embedding of a multi-batch dataset, one run.

A run's seed picks the random subsample of cells (``subsample`` fraction), so several runs give
Fig. 2's boxplots.

Snakemake interface:

    input:
        emb        results/embeddings/{method}/{dataset}.h5ad
        processed  results/data/{dataset}/processed.h5ad   (its X gives the pre-integrated PCA)
    params:
        method, dataset, seed   default: the wildcards of the same names (seed default 0)
        integration   dict of IntegrationConfig overrides: batch_key ("batch"), label_key ("cell_type"),
                      subsample (0.8), n_pcs (50), isolated_labels (False, as ssl_in_scg),
                      kbet_per_label (True), neighbors ("auto": exact up to exact_max_cells=50000,
                      else pynndescent)
        record_failures   default False
    output:
        score      results/scores/integration/{method}/{dataset}/{seed}.json
    log:
        optional, one file
"""

from scjepa.io import read_h5ad
from scjepa.tasks.common import read_embedding, run_score_script, smk_get
from scjepa.tasks.integration import IntegrationConfig, integration_run


def main(snakemake):
    p = snakemake.params

    def compute(method, dataset, seed):
        cfg = IntegrationConfig.from_dict(dict(smk_get(p, "integration", {}) or {}))
        processed = read_h5ad(snakemake.input.processed)
        adata = read_embedding(snakemake.input.emb, processed.obs_names, required_obs=(cfg.batch_key, cfg.label_key))
        metrics, config = integration_run(adata, processed.X, seed=0 if seed is None else seed, config=cfg, path=snakemake.input.emb)
        config["embedding"] = str(snakemake.input.emb)
        return metrics, config

    run_score_script(snakemake, "integration", compute)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
