"""Rule score_zero_shot: zero-shot annotation of one method's embedding of one dataset (kNN + linear probe).

Inputs, params and outputs: ``scjepa.tasks.entries.zero_shot_rule``.
"""

from scjepa.rule import run
from scjepa.tasks.entries import zero_shot_rule

run(snakemake, zero_shot_rule)  # noqa: F821
