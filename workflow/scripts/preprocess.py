"""Rule preprocess: raw.h5ad -> results/data/{dataset}/processed.h5ad (docs/CONTRACTS.md)."""

from scjepa.data.preprocess import preprocess_dataset
from scjepa.logs import rule_log

with rule_log(snakemake.log[0]) as log:
    provenance = preprocess_dataset(snakemake.params.spec, snakemake.params.preprocess, snakemake.input.raw,
                                    snakemake.input.provenance, snakemake.input.genes, snakemake.output.processed)
    log.info("provenance: %s", provenance)
