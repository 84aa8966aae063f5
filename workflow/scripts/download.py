"""Rules download_* / link_local_h5ad / extract_bundled_h5ad / generate_synthetic:
resources/datasets/{dataset}/raw.h5ad and its provenance (``scjepa.data.sources.fetch_rule``)."""

from scjepa.data.sources import fetch_rule
from scjepa.rule import run

run(snakemake, fetch_rule)  # noqa: F821
