"""Rule pretrain_<family>: fit a method on the corpus' training store; write its model directory.

The logic is ``scjepa.methods.pretrain``; an interrupted job resumes from the checkpoints in the hidden
``.<model dir>.work`` sibling, which survives Snakemake's clean-up of the failed output (and keeps the
final checkpoint, so a finished-but-unrecorded job resumes at its last step).
"""

from scjepa.logs import rule_log
from scjepa.methods import pretrain

with rule_log(snakemake.log[0]) as log:
    pretrain(
        dict(snakemake.params.hparams),
        store_dir=snakemake.input.store,
        val_h5ad=snakemake.input.get("val"),
        out_dir=snakemake.output.model,
        seed=int(snakemake.params.seed),
        method_name=snakemake.params.method,
        num_threads=snakemake.threads,
    )
    log.info("wrote %s", snakemake.output.model)
