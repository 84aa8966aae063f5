"""Rules embed_scvi / embed_harmony: methods fitted on each evaluation dataset itself."""

from scjepa.logs import rule_log
from scjepa.methods.per_dataset import embed_dataset

with rule_log(snakemake.log[0]) as log:
    hparams = {k: v for k, v in snakemake.params.hparams.items() if k != "family"}
    hparams["method"] = snakemake.wildcards.method
    embed_dataset(snakemake.params.family, hparams, snakemake.input.data, snakemake.output.emb,
                  model_dir=snakemake.output.model, seed=snakemake.params.seed, num_threads=snakemake.threads)
    log.info("wrote %s", snakemake.output.emb)
