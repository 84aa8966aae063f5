"""Rule pretrain_<family>: fit a method on the corpus' training store, write its model directory (resumes from checkpoints; N GPUs: torchrun ranks) (``scjepa.methods.pretraining.pretrain_rule``)."""

from scjepa.methods.pretraining import pretrain_rule
from scjepa.rule import run

run(snakemake, pretrain_rule)  # noqa: F821
