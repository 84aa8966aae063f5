"""Rule figure_bridge: Fig. 5, the bridge in each latent seen in the shared reference space (``scjepa.report.bridge_figures.bridge_figure_rule``)."""

from scjepa.report.bridge_figures import bridge_figure_rule
from scjepa.rule import run

run(snakemake, bridge_figure_rule)  # noqa: F821
