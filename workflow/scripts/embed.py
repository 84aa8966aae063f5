"""Rule embed_<family>: embed a processed dataset with a saved model (the method contract)."""

import torch

from scjepa.logs import rule_log
from scjepa.methods import embed_file

with rule_log(snakemake.log[0]) as log:
    torch.set_num_threads(max(1, int(snakemake.threads)))
    embed_file(snakemake.input.model, snakemake.input.data, snakemake.output.emb)
    log.info("wrote %s", snakemake.output.emb)
