"""Rule preprocess: raw.h5ad -> results/data/{dataset}/processed.h5ad (docs/CONTRACTS.md;
``scjepa.data.preprocess.preprocess_rule``)."""

from scjepa.data.preprocess import preprocess_rule
from scjepa.rule import run

run(snakemake, preprocess_rule)  # noqa: F821
