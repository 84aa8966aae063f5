"""Rule preprocess: raw.h5ad -> results/data/{dataset}/processed.h5ad (docs/CONTRACTS.md)."""

import json

from scjepa.data.genes import GeneSpace
from scjepa.data.preprocess import PreprocessConfig, preprocess
from scjepa.logs import rule_log

with rule_log(snakemake.log[0]) as log:
    spec = snakemake.params.spec
    pp = snakemake.params.preprocess
    prov = json.loads(open(snakemake.input.provenance).read())
    cols = dict(spec.get("columns", {}))
    gene_id_column = cols.pop("gene_ids", None)
    from scjepa.config import ROLE_COLUMNS

    required = sorted({c for r in spec["roles"] for c in ROLE_COLUMNS[r]})
    cfg = PreprocessConfig(
        target_sum=pp["target_sum"],
        chunk_size=pp["chunk_size"],
        min_coverage=spec["min_coverage"] if spec.get("min_coverage") is not None else pp["min_coverage"],
        split_fractions=tuple(pp["split_fractions"]),
        split_seed=pp["split_seed"],
        x_kind=prov.get("x_kind", spec.get("x_kind", "counts")),
        columns=cols,
        required=tuple(required),
        keep_columns=tuple(spec.get("keep_columns", [])),
        gene_id_column=gene_id_column,
        matrix=spec.get("matrix", "X"),
        dataset=spec["name"],
    )
    provenance = preprocess(snakemake.input.raw, GeneSpace.read(snakemake.input.genes), snakemake.output.processed,
                            cfg, raw_sha256=prov.get("sha256"), source=spec["source"])
    log.info("provenance: %s", provenance)
