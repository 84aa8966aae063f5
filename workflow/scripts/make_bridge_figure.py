"""Rule figure_bridge: each method's latent with snapshots and sampled bridge paths."""

from scjepa.logs import rule_log
from scjepa.report.bridge_figures import plot_bridge_paths
from scjepa.report.figures import set_style

with rule_log(snakemake.log[0]):
    set_style(snakemake.params.get("style"), snakemake.params.get("dpi"))
    samples = list(snakemake.input.samples)
    methods = list(snakemake.params.methods)
    labels = snakemake.params.row_labels or {}
    plot_bridge_paths({labels.get(m, m): p for m, p in zip(methods, samples)},
                      snakemake.output.png, snakemake.output.pdf)
