"""Rule download_*/generate_synthetic: materialise resources/datasets/{dataset}/raw.h5ad."""

from scjepa.data.sources import fetch
from scjepa.io import write_json
from scjepa.logs import rule_log

with rule_log(snakemake.log[0]) as log:
    spec = dict(snakemake.params.spec)
    log.info("fetching dataset %s from source %s", spec["dataset"], spec["source"])
    provenance = fetch(spec, snakemake.output.raw)
    write_json({"dataset": spec["dataset"], **provenance}, snakemake.output.provenance)
