"""Rule check_leakage: no evaluation test donor is a corpus train/val donor (``scjepa.data.leakage.leakage_rule``)."""

from scjepa.data.leakage import leakage_rule
from scjepa.rule import run

run(snakemake, leakage_rule)  # noqa: F821
