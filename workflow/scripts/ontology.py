"""Rules fetch_cell_ontology / write_synthetic_ontology: the OBO file of hierarchy-corrected F1."""

from scjepa.io import write_json
from scjepa.logs import rule_log

with rule_log(snakemake.log[0]) as log:
    if snakemake.params.kind == "cell_ontology":
        from scjepa.data.sources import fetch_cell_ontology

        record = fetch_cell_ontology(snakemake.output.obo, version=snakemake.wildcards.version)
    else:
        from scjepa.ontology import write_synthetic_ontology

        ids = write_synthetic_ontology(snakemake.output.obo, n_types=int(snakemake.params.n_types))
        record = {"source": "synthetic", "origin": "scjepa.ontology.write_synthetic_ontology",
                  "n_types": int(snakemake.params.n_types), "n_terms": len(ids)}
    log.info("ontology: %s", record)
    write_json(record, snakemake.output.provenance)
