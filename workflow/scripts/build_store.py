"""Rule build_store: the corpus' train/val splits as shuffled CSR shards."""

from scjepa.data.store import build_store
from scjepa.logs import rule_log

with rule_log(snakemake.log[0]) as log:
    meta = build_store(snakemake.input.processed, snakemake.output.store,
                       shard_size=snakemake.params.store["shard_size"], seed=snakemake.params.seed)
    log.info("store: %s", {k: v["n_cells"] for k, v in meta["splits"].items()})
