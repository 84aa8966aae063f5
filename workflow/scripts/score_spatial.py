"""Spatial transfer for one method: zero-shot kNN within the spatial dataset and cross-platform
transfer from a dissociated-cell reference (same method's embedding of another dataset).

Fine-tuned annotation of the spatial dataset is ``score_finetune.py`` run on it (task "finetune").

Snakemake interface:

    input:
        emb            results/embeddings/{method}/{dataset}.h5ad      (the spatial dataset)
        ref_emb        results/embeddings/{method}/{reference}.h5ad    (optional: no transfer without it)
        processed      results/data/{dataset}/processed.h5ad            (optional: row check)
        ref_processed  results/data/{reference}/processed.h5ad          (optional: row check)
    params:
        method, dataset   default: the wildcards of the same names
        reference         name of the reference dataset (default: "reference")
        label_key         default "cell_type" (same column name in both datasets)
        split_key         default "split"
        ref_split         default "train"  (within-dataset kNN reference)
        query_split       default "test"   (within-dataset kNN query)
        transfer_ref_split  default None   (every reference cell; e.g. "train" to use its train split)
        k                 default 5
        probe             default True
        seed              default 0 (probe solver only; the record's seed is null)
        record_failures   default False
        hierarchy         optional tasks.zero_shot.hierarchy settings (enabled: hier_* scores, input.ontology)
    output:
        score        results/scores/spatial/{method}/{dataset}.json
        predictions  results/scores/spatial/{method}/{dataset}.predictions.csv
                     (obs_name, x, y, cell_type, split, pred_knn, pred_transfer; for Fig. 3)
    log:
        optional, one file
"""

from scjepa.contracts import processed_obs_names, read_embedding
from scjepa.ontology import load_hierarchy
from scjepa.tasks.common import run_score_script, smk_get
from scjepa.tasks.spatial import spatial_scores, write_predictions


def main(snakemake):
    p = snakemake.params
    inp = snakemake.input

    def compute(method, dataset, seed):
        label_key = smk_get(p, "label_key", "cell_type")
        processed, ref_processed, ref_path = (smk_get(inp, n) for n in ("processed", "ref_processed", "ref_emb"))
        spatial = read_embedding(
            inp.emb, processed_obs_names(processed) if processed else None, required_obs=(label_key,)
        )
        hierarchy = load_hierarchy(smk_get(p, "hierarchy"), smk_get(inp, "ontology"))
        reference = None
        if ref_path:
            ref_names = processed_obs_names(ref_processed) if ref_processed else None
            reference = read_embedding(ref_path, ref_names, required_obs=(label_key,))
        metrics, predictions, config = spatial_scores(
            spatial,
            reference,
            spatial_name=dataset,
            reference_name=smk_get(p, "reference", "reference"),
            label_key=label_key,
            split_key=smk_get(p, "split_key", "split"),
            ref_split=smk_get(p, "ref_split", "train"),
            query_split=smk_get(p, "query_split", "test"),
            transfer_ref_split=smk_get(p, "transfer_ref_split"),
            k=int(smk_get(p, "k", 5)),
            probe=bool(smk_get(p, "probe", True)),
            seed=0 if seed is None else seed,
            spatial_path=inp.emb,
            reference_path=ref_path,
            hierarchy=hierarchy,
        )
        write_predictions(predictions, snakemake.output.predictions)
        if hierarchy:
            config["hierarchy"] = hierarchy.config()
        return metrics, {**config, "embedding": str(inp.emb), "reference_embedding": ref_path and str(ref_path)}

    run_score_script(snakemake, "spatial", compute, seed_in_record=False)


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
