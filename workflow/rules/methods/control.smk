# Controls (scjepa.methods.controls): a floor and a ceiling for every score. Each is computed on the
# dataset it embeds, like Harmony: random embedding, the dataset's own unintegrated PCs, or the true labels
# plus noise. `method_params.<m>: {family: control, control: negative|positive, hparams: {kind: ...},
# serves: [...]}`; tables mark them and never make them bold.


rule embed_control:
    input:
        data=processed_input,
    output:
        emb="results/embeddings/{method}/{dataset}.h5ad",
        model=directory("results/models/{method}/{dataset}"),
    wildcard_constraints:
        method=names_regex(methods_of_family("control")),
    params:
        family="control",
        hparams=method_hparams,
        seed=config["seed"],
    log:
        "logs/embed/{method}/{dataset}.log",
    benchmark:
        "results/benchmarks/embed/{method}/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../../scripts/embed_per_dataset.py"
