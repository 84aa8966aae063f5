# PCA baseline: 64 components fitted incrementally on the pretraining store (PROTOCOL.md, Methods).
# This file is also the template for a new pretrained method: copy it, rename the rules and the
# family, and name your method in config.yaml's `methods:` list.


rule pretrain_pca:
    input:
        store=rules.build_store.output.store,
        val=processed_path(CORPUS),
    output:
        model=directory("results/models/{method}"),
    wildcard_constraints:
        method=names_regex(methods_of_family("pca")),
    params:
        method="{method}",
        hparams=method_hparams,
        seed=config["seed"],
    log:
        "logs/pretrain/{method}.log",
    benchmark:
        "results/benchmarks/pretrain/{method}.tsv"
    threads: 2
    resources:
        mem_mb=mem(4000),
        runtime=runtime(120),
    script:
        "../../scripts/pretrain.py"


rule embed_pca:
    input:
        model="results/models/{method}",
        data=processed_input,
    output:
        emb="results/embeddings/{method}/{dataset}.h5ad",
    wildcard_constraints:
        method=names_regex(methods_of_family("pca")),
    log:
        "logs/embed/{method}/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=runtime(30),
    script:
        "../../scripts/embed.py"
