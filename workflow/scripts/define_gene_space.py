"""Rule define_gene_space: results/gene_space.tsv (``scjepa.data.genes.gene_space_rule``)."""

from scjepa.data.genes import gene_space_rule
from scjepa.rule import run

run(snakemake, gene_space_rule)  # noqa: F821
