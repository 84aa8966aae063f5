"""Rules figure_integration / figure_spatial / figure_training_dynamics: one paper figure (PNG + PDF).

``params.figure`` picks it; inputs and params: ``scjepa.report.figures.figure_rule``.
"""

from scjepa.report.figures import figure_rule
from scjepa.rule import run

run(snakemake, figure_rule)  # noqa: F821
