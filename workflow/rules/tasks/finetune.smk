# Task 'finetune': its scoring rule. The task itself (roles, methods served, tables, figures) is declared in
# the task registry, scjepa.task_registry; a task the library does not declare calls register_task(...) here.
# Each rule reads the method contract (results/embeddings/{method}/{dataset}.h5ad) or, for fine-tuning,
# the model directory, and writes the score records results/scores/finetune/{method}/{dataset}[/{seed}].json.


from scjepa import eval_costs as _costs


def _finetune_cost(wildcards, input, shape_of):
    """seeds x epochs over the dataset; on a GPU node an epoch costs the host's batch assembly (scjepa.eval_costs);
    on the store path memory is the loader's and one evaluation chunk's, not the dataset's."""
    shape = shape_of(input.processed)
    gpu = method_gpu(wildcards.method) > 0 and config["training"]["device"] != "cpu"
    ft = config["tasks"]["finetune"]
    return shape and _costs.finetune_cost(
        shape, epochs=ft["max_epochs"], seeds=len(FINETUNE_SEEDS), gpu=gpu,
        streaming=finetune_streams(wildcards.dataset), batch_size=ft["batch_size"],
        shard_size=config["store"]["shard_size"], buffer_shards=config["store"]["buffer_shards"],
        hierarchy=bool(HIERARCHY["enabled"]))


FINETUNE_MEM, FINETUNE_RUNTIME = _costs.resources("finetune", _finetune_cost, floor=(8000, 120 * len(FINETUNE_SEEDS)))


rule score_finetune:
    """Pretrained encoder + linear head, full fine-tuning, model selection on val; every seed.

    All seeds of a (method, dataset) share one job: the imports and the dataset read (~5 s, more than
    one fine-tuning run of the default config) are paid once; each seed's record is what a job of its
    own would write. The corpus (tasks.finetune.stream: corpus) is fine-tuned in bounded memory: train
    and val batches from its pretraining store (an input only then), test rows streamed from the processed file.
    """
    input:
        unpack(evaluation_guards),
        unpack(finetune_inputs),
    output:
        scores=expand(
            "results/scores/finetune/{{method}}/{{dataset}}/{seed}.json",
            seed=FINETUNE_SEEDS,
        ),
        histories=expand(
            "results/scores/finetune/{{method}}/{{dataset}}/{seed}.history.csv",
            seed=FINETUNE_SEEDS,
        ),
    params:
        finetune=finetune_params,
        init="pretrained",
        hierarchy=hierarchy_params,
        seeds=FINETUNE_SEEDS,
    log:
        "logs/score_finetune/{method}/{dataset}.log",
    benchmark:
        "results/benchmarks/score_finetune/{method}/{dataset}.tsv"
    threads: config["training"]["threads"]
    resources:
        mem_mb=FINETUNE_MEM,  # from the processed file's cells and non-zeros at scheduling time (store path: bounded)
        runtime=FINETUNE_RUNTIME,
        gpu=1,
    conda:
        ENV
    script:
        "../../scripts/score_finetune.py"
