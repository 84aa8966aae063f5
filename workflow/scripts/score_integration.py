"""Rule score_integration: scib-metrics of one method's embedding of a multi-batch dataset; one record per run.

Inputs, params and outputs: ``scjepa.tasks.entries.integration_rule``.
"""

from scjepa.rule import run
from scjepa.tasks.entries import integration_rule

run(snakemake, integration_rule)  # noqa: F821
