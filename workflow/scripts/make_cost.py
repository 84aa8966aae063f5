"""Rule report_cost: cost per method from the benchmark files (table_cost.{md,csv,tex}, fig_cost.{png,pdf}).

Inputs and params: ``scjepa.report.cost.cost_rule``.
"""

from scjepa.report.cost import cost_rule
from scjepa.rule import run

run(snakemake, cost_rule)  # noqa: F821
