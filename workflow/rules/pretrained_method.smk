# Templates for a method pretrained on the corpus: `pretrain_method` trains on the store and writes
# results/models/{method}/; `embed_method` writes the method contract for every dataset. They match
# nothing by themselves (method=NEVER); a method file instantiates them for its own method names:
#
#     use rule pretrain_method as pretrain_scjepa with:
#         wildcard_constraints:
#             method=names_regex(methods_of_family("scjepa")),
#
# (workflow/rules/methods/scjepa.smk). The training code is picked by the method's `family`.
#
# GPUs: `method_params.<m>.gpu: N` asks for N GPUs (`resources: gpu`, which the SLURM plugin turns into
# `--gpus=N`). With N > 1 the job starts N data-parallel ranks with torchrun on its node (`nodes=1`: the
# GPUs must share a node) and trains with DistributedDataParallel; `batch_size` stays the global batch.
# CPUs: `training.threads` per rank (threads = training.threads x N; SLURM's --cpus-per-task); each rank
# uses one for its training loop and the rest as loader workers.


def pretrain_threads(wildcards):
    return config["training"]["threads"] * max(1, method_gpu(wildcards.method))


rule pretrain_method:
    input:
        store=rules.build_store.output.store,
        val=processed_path(CORPUS),
    output:
        model=directory("results/models/{method}"),
    wildcard_constraints:
        method=NEVER,
    params:
        method="{method}",
        hparams=method_hparams,
        seed=method_seed,
    log:
        "logs/pretrain/{method}.log",
    benchmark:
        "results/benchmarks/pretrain/{method}.tsv"
    threads: pretrain_threads
    resources:
        mem_mb=mem(8000),
        runtime=runtime(240),
        gpu=gpu_of_method,
        nodes=1,
    conda:
        ENV
    script:
        script_path("pretrain.py")


rule embed_method:
    input:
        model="results/models/{method}",
        data=processed_input,
    output:
        emb="results/embeddings/{method}/{dataset}.h5ad",
    wildcard_constraints:
        method=NEVER,
    log:
        "logs/embed/{method}/{dataset}.log",
    benchmark:
        "results/benchmarks/embed/{method}/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=runtime(30),
    conda:
        ENV
    script:
        script_path("embed.py")
