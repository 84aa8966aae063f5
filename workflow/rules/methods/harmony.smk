# Harmony (harmonypy): PCA of the log-normalised expression corrected per batch; integration baseline.


rule embed_harmony:
    input:
        data=processed_input,
    output:
        emb="results/embeddings/{method}/{dataset}.h5ad",
        model=directory("results/models/{method}/{dataset}"),
    wildcard_constraints:
        method=names_regex(methods_of_family("harmony")),
    params:
        family="harmony",
        hparams=method_hparams,
        seed=method_seed,
    log:
        "logs/embed/{method}/{dataset}.log",
    benchmark:
        "results/benchmarks/embed/{method}/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=mem(8000),
        runtime=runtime(60),
    conda:
        ENV
    script:
        "../../scripts/embed_per_dataset.py"
