"""Rule define_gene_space: write results/gene_space.tsv (gene_id, gene_symbol)."""

from pathlib import Path

import pandas as pd

from scjepa.data.genes import GeneSpace
from scjepa.io import read_h5ad
from scjepa.logs import rule_log

with rule_log(snakemake.log[0]) as log:
    src = Path(snakemake.input.source)
    if src.suffix == ".h5ad":
        adata = read_h5ad(src, backed="r")
        col = snakemake.params.gene_ids_column
        ids = adata.var[col] if col else adata.var_names
        symbols = adata.var["gene_symbol"] if "gene_symbol" in adata.var else (
            adata.var["feature_name"] if "feature_name" in adata.var else ids)
        space = GeneSpace(pd.Index(ids).astype(str), pd.Index(symbols).astype(str))
        adata.file.close()
    else:
        space = GeneSpace.read(src)
    space.write(snakemake.output.genes)
    log.info("gene space: %d genes from %s", len(space), src)
