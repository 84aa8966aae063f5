# scVI (scvi-tools): an integration baseline trained per dataset on raw counts (layers["counts"]),
# with explicit max_epochs and a KL warm-up that completes (docs/PROTOCOL.md §2.4).


rule embed_scvi:
    input:
        data=processed_input,
    output:
        emb="results/embeddings/{method}/{dataset}.h5ad",
        model=directory("results/models/{method}/{dataset}"),
    wildcard_constraints:
        method=names_regex(methods_of_family("scvi")),
    params:
        family="scvi",
        hparams=method_hparams,
        seed=method_seed,
    log:
        "logs/embed/{method}/{dataset}.log",
    benchmark:
        "results/benchmarks/embed/{method}/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=mem(8000),
        runtime=runtime(240),
        gpu=gpu_of_method,
    conda:
        ENV
    script:
        "../../scripts/embed_per_dataset.py"
