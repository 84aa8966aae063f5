"""Rules embed_scvi / embed_harmony / embed_control: methods fitted on each evaluation dataset itself
(``scjepa.methods.per_dataset.embed_rule``)."""

from scjepa.methods.per_dataset import embed_rule
from scjepa.rule import run

run(snakemake, embed_rule)  # noqa: F821
