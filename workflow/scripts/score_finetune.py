"""Fine-tuned annotation: a method's pretrained encoder + linear head, one record per seed.

One job may fine-tune several seeds (``params.seeds`` + ``output.scores``/``output.histories``): the
dataset is read once and each process pays its imports (torch, its optimiser machinery, scikit-learn:
about 5 s, more than a fine-tuning run of the default config) once. Every seed starts from the saved
encoder and its own seed, so its record is the same as in a job of its own.

The supervised baseline is the same script with ``params.init = "random"``. A method without a
torch encoder (e.g. PCA) gets a record with status "n/a".

Snakemake interface:

    input:
        processed  results/data/{dataset}/processed.h5ad
        model      results/models/{method}/    (optional for init="random": without it, the default
                                                MLP encoder on the dataset's genes)
    params:
        method, dataset, seed   default: the wildcards of the same names (seed default 0)
        init              "pretrained" (default) | "random"
        label_key         default "cell_type"
        split_key         default "split" (train / val / test)
        finetune          dict of FinetuneConfig overrides: epochs (20), batch_size (256), lr (9e-4),
                          weight_decay (0.05), lr_step_size (2), lr_gamma (0.9), grad_clip (1.0),
                          class_balanced (True), patience (None), eval_batch_size, device ("auto"),
                          min_gene_coverage (0.5)
        record_failures   default False
        hierarchy         optional tasks.zero_shot.hierarchy settings (enabled: hier_* scores, input.ontology)
        seeds             (instead of seed) list of seeds, aligned with output.scores (and histories)
    output:
        score      results/scores/finetune/{method}/{dataset}/{seed}.json
        history    (optional) per-epoch CSV: epoch, train_loss, val_macro_f1
        scores     (instead of score) list of such paths, aligned with params.seeds
        histories  (instead of history, optional) list of per-epoch CSVs, aligned with params.seeds
    log:
        optional, one file
"""

from scjepa.io import read_h5ad, write_text
from scjepa.methods.base import read_genes
from scjepa.ontology import load_hierarchy
from scjepa.tasks.common import run_score_seeds, smk_get
from scjepa.tasks.finetune import FinetuneConfig, finetune_dataset, load_pretrained_encoder


def main(snakemake):
    import torch

    torch.set_num_threads(max(1, int(getattr(snakemake, "threads", 1) or 1)))  # the job's share of the node, not every core
    p = snakemake.params

    cache: dict = {}

    def compute(method, dataset, seed, history=None):
        import pandas as pd

        seed = 0 if seed is None else seed
        cfg = FinetuneConfig.from_dict(dict(smk_get(p, "finetune", {}) or {}))
        model_dir = smk_get(snakemake.input, "model")
        # Load the encoder before the dataset: a method without one is n/a at no cost. A fresh copy for
        # every seed (fine-tuning changes it in place).
        encoder = load_pretrained_encoder(model_dir) if model_dir else None
        genes = read_genes(model_dir) if model_dir else None
        if "adata" not in cache:  # read once per job, however many seeds
            cache["adata"] = read_h5ad(snakemake.input.processed)
            cache["hierarchy"] = load_hierarchy(smk_get(p, "hierarchy"), smk_get(snakemake.input, "ontology"))
        result, run_config = finetune_dataset(
            cache["adata"],
            model_dir,
            init=smk_get(p, "init", "pretrained"),
            seed=seed,
            label_key=smk_get(p, "label_key", "cell_type"),
            split_key=smk_get(p, "split_key", "split"),
            config=cfg,
            encoder=encoder,
            genes=genes,
            path=snakemake.input.processed,
            hierarchy=cache["hierarchy"],
        )
        if cache["hierarchy"]:
            run_config["hierarchy"] = cache["hierarchy"].config()
        if history:
            write_text(pd.DataFrame(result.history).to_csv(index=False, float_format="%.6g"), history)
        return result.metrics, run_config

    run_score_seeds(snakemake, "finetune", compute, per_seed_outputs={"history": "histories"})


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
