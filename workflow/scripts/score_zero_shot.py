"""Zero-shot annotation of one method's embedding of one dataset (kNN k=5 + linear probe).

Snakemake interface (``script: "../scripts/score_zero_shot.py"``):

    input:
        emb        results/embeddings/{method}/{dataset}.h5ad   (the method contract)
        processed  results/data/{dataset}/processed.h5ad        (optional: rows/order are checked against it)
    params:
        method, dataset   default: the wildcards of the same names
        label_key         default "cell_type"
        split_key         default "split"
        ref_split         default "train" (ssl_in_scg used "val" for scTab: keep it a config value)
        query_split       default "test"
        k                 default 5
        probe             default True (linear probe beside the kNN)
        seed              default 0 (only the probe's solver uses it; the record's seed is null)
        record_failures   default False (True: an error writes a "failed" record instead of failing the job)
        hierarchy         optional tasks.zero_shot.hierarchy settings (enabled: hier_* scores, input.ontology)
    output:
        score      results/scores/zero_shot/{method}/{dataset}.json
    log:
        optional, one file
"""

from scjepa.contracts import processed_obs_names, read_embedding
from scjepa.ontology import load_hierarchy
from scjepa.tasks.common import run_score_script, smk_get
from scjepa.tasks.knn import zero_shot, zero_shot_config


def main(snakemake):
    p = snakemake.params

    def compute(method, dataset, seed):
        label_key = smk_get(p, "label_key", "cell_type")
        split_key = smk_get(p, "split_key", "split")
        processed = smk_get(snakemake.input, "processed")
        expected = processed_obs_names(processed) if processed else None
        adata = read_embedding(snakemake.input.emb, expected, required_obs=(label_key, split_key))
        opts = dict(
            label_key=label_key,
            split_key=split_key,
            ref_split=smk_get(p, "ref_split", "train"),
            query_split=smk_get(p, "query_split", "test"),
            k=int(smk_get(p, "k", 5)),
            probe=bool(smk_get(p, "probe", True)),
            seed=int(seed if seed is not None else 0),
        )
        hierarchy = load_hierarchy(smk_get(p, "hierarchy"), smk_get(snakemake.input, "ontology"))
        metrics, _ = zero_shot(adata, path=snakemake.input.emb, hierarchy=hierarchy, **opts)
        extra = {"hierarchy": hierarchy.config()} if hierarchy else {}
        return metrics, zero_shot_config(
            **opts, embedding=str(snakemake.input.emb), embedding_dim=int(adata.obsm["X_emb"].shape[1]), **extra
        )

    run_score_script(snakemake, "zero_shot", compute, seed_in_record=False)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
