"""Rule report_sweep: a sweep's table and figure (validation scores per grid point).

Inputs, params and outputs: ``scjepa.report.sweep.sweep_report_rule``.
"""

from scjepa.report.sweep import sweep_report_rule
from scjepa.rule import run

run(snakemake, sweep_report_rule)  # noqa: F821
