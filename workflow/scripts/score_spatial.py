"""Rule score_spatial: kNN within the tissue and cross-platform transfer from a dissociated reference.

Inputs, params and outputs: ``scjepa.tasks.entries.spatial_rule``.
"""

from scjepa.rule import run
from scjepa.tasks.entries import spatial_rule

run(snakemake, spatial_rule)  # noqa: F821
