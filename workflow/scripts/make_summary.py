"""Rule report_summary: the benchmark at a glance (table_summary.{md,csv,tex}, fig_summary.{png,pdf}).

Inputs and params: ``scjepa.report.summary.summary_rule``.
"""

from scjepa.report.summary import summary_rule
from scjepa.rule import run

run(snakemake, summary_rule)  # noqa: F821
