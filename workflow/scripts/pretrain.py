"""Rule pretrain_<family>: fit a method on the corpus' training store; write its model directory.

The logic is ``scjepa.methods.pretrain``; an interrupted job resumes from the checkpoints in the hidden
``.<model dir>.work`` sibling, which survives Snakemake's clean-up of the failed output (and keeps the
final checkpoint, so a finished-but-unrecorded job resumes at its last step). A torch method that asks
for several GPUs (``method_params.<m>.gpu: N``, N > 1) trains on N data-parallel ranks started by
torchrun inside this job (``scjepa.methods.distributed``).
"""

from scjepa.logs import rule_log
from scjepa.methods import get_family, pretrain

kwargs = dict(
    hparams=dict(snakemake.params.hparams),
    store_dir=str(snakemake.input.store),
    val_h5ad=snakemake.input.get("val"),
    out_dir=str(snakemake.output.model),
    seed=int(snakemake.params.seed),
    method_name=snakemake.params.method,
    num_threads=snakemake.threads,
)
gpus = int(snakemake.resources.get("gpu", 0) or 0)

with rule_log(snakemake.log[0]) as log:
    if gpus > 1 and getattr(get_family(kwargs["hparams"]["family"]), "is_torch", False):
        from scjepa.methods.distributed import launch

        log.info("pretraining on %d data-parallel ranks (torchrun, DistributedDataParallel)", gpus)
        launch(gpus, kwargs)
    else:
        pretrain(**kwargs)
    log.info("wrote %s", snakemake.output.model)
