"""Rule build_store: the corpus' train/val splits as shuffled CSR shards (``scjepa.data.store.build_store_rule``)."""

from scjepa.data.store import build_store_rule
from scjepa.rule import run

run(snakemake, build_store_rule)  # noqa: F821
