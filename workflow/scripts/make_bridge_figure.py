"""Rule figure_bridge: Fig. 5, each method's bridge against the held-out snapshots and the best baseline in the
shared reference space (time courses); control -> perturbed paths in each latent (perturbation screens)."""

from scjepa.logs import rule_log
from scjepa.report.bridge_figures import plot_bridge_heldout, plot_bridge_paths
from scjepa.report.figures import set_style

with rule_log(snakemake.log[0]):
    set_style(snakemake.params.get("style"), snakemake.params.get("dpi"))
    samples = list(snakemake.input.samples)
    methods = list(snakemake.params.methods)
    labels = snakemake.params.row_labels or {}
    files = {labels.get(m, m): p for m, p in zip(methods, samples)}
    kinds = set()
    for p in samples:
        import numpy as np

        try:
            with np.load(p, allow_pickle=False) as z:
                kinds.add(str(z["kind"]) if "kind" in z.files else "timecourse")
        except Exception:
            pass
    plot = plot_bridge_paths if kinds == {"perturbation"} else plot_bridge_heldout
    plot(files, snakemake.output.png, snakemake.output.pdf)
