"""Rule score_bridge: the bridge benchmark of one method's latent on one dataset
(``scjepa.tasks.bridge.entry.score_rule``; inputs, params and outputs are documented there)."""

from scjepa.rule import run
from scjepa.tasks.bridge.entry import score_rule

run(snakemake, score_rule)  # noqa: F821
