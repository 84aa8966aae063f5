"""Rules fetch_cell_ontology / write_synthetic_ontology: the OBO file of hierarchy-corrected F1 (``scjepa.ontology.ontology_rule``)."""

from scjepa.ontology import ontology_rule
from scjepa.rule import run

run(snakemake, ontology_rule)  # noqa: F821
