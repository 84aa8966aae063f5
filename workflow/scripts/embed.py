"""Rule embed_<family>: embed a processed dataset with a saved model (``scjepa.methods.embedding.embed_rule``)."""

from scjepa.methods.embedding import embed_rule
from scjepa.rule import run

run(snakemake, embed_rule)  # noqa: F821
