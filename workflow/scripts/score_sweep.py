"""Rule score_sweep: one sweep variant's embedding scored on the validation split (kNN, train -> val).

Inputs, params and outputs: ``scjepa.tasks.sweep.sweep_rule``.
"""

from scjepa.rule import run
from scjepa.tasks.sweep import sweep_rule

run(snakemake, sweep_rule)  # noqa: F821
