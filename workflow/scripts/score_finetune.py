"""Rule score_finetune: a method's pretrained encoder + linear head, fine-tuned; one record per seed.

Inputs, params and outputs: ``scjepa.tasks.entries.finetune_rule``.
"""

from scjepa.rule import run
from scjepa.tasks.entries import finetune_rule

run(snakemake, finetune_rule)  # noqa: F821
