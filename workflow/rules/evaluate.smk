# Evaluation rules. Each reads the method contract (results/embeddings/{method}/{dataset}.h5ad) or,
# for fine-tuning, the model directory, and writes one score record per (method, dataset[, seed]).


rule score_zero_shot:
    """Frozen-encoder annotation: kNN (k=5) and a linear probe, reference -> query split."""
    input:
        emb=embedding_input,
        processed=processed_input,
    output:
        score="results/scores/zero_shot/{method}/{dataset}.json",
    params:
        k=config["tasks"]["zero_shot"]["k"],
        ref_split=config["tasks"]["zero_shot"]["reference_split"],
        query_split=config["tasks"]["zero_shot"]["query_split"],
        probe=config["tasks"]["zero_shot"]["linear_probe"],
        seed=config["seed"],
    log:
        "logs/score_zero_shot/{method}/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=runtime(30),
    conda:
        ENV
    script:
        "../scripts/score_zero_shot.py"


rule score_finetune:
    """Pretrained encoder + linear head, full fine-tuning, model selection on val; every seed.

    All seeds of a (method, dataset) share one job: the imports and the dataset read (~5 s, more than
    one fine-tuning run of the default config) are paid once; each seed's record is what a job of its
    own would write.
    """
    input:
        processed=processed_input,
        model=model_input,
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
        seeds=FINETUNE_SEEDS,
    log:
        "logs/score_finetune/{method}/{dataset}.log",
    benchmark:
        "results/benchmarks/score_finetune/{method}/{dataset}.tsv"
    threads: config["training"]["threads"]
    resources:
        mem_mb=mem(8000),
        runtime=runtime(120 * len(FINETUNE_SEEDS)),
        gpu=1,
    conda:
        ENV
    script:
        "../scripts/score_finetune.py"


rule score_integration:
    """scib-metrics Benchmarker, one run per seed on a random subsample: bio, batch, total.

    All runs of a (method, dataset) share one job: scib-metrics' JIT compilation is paid once.
    """
    input:
        emb=embedding_input,
        processed=processed_input,
    output:
        scores=expand(
            "results/scores/integration/{{method}}/{{dataset}}/{run}.json",
            run=range(config["tasks"]["integration"]["runs"]),
        ),
    params:
        integration=integration_params,
        seeds=list(range(config["tasks"]["integration"]["runs"])),
    log:
        "logs/score_integration/{method}/{dataset}.log",
    benchmark:
        "results/benchmarks/score_integration/{method}/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=mem(8000),
        runtime=runtime(60),
    conda:
        ENV
    script:
        "../scripts/score_integration.py"


rule score_spatial:
    """Spatial: zero-shot kNN within the tissue and cross-platform transfer from a dissociated reference."""
    input:
        unpack(spatial_inputs),
    output:
        score="results/scores/spatial/{method}/{dataset}.json",
        predictions="results/scores/spatial/{method}/{dataset}.predictions.csv",
    params:
        reference=spatial_reference,
        k=config["tasks"]["spatial"]["k"],
        seed=config["seed"],
    log:
        "logs/score_spatial/{method}/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=runtime(30),
    conda:
        ENV
    script:
        "../scripts/score_spatial.py"


rule score_bridge:
    """Schrödinger bridges in the method's latent: leave-one-timepoint-out, fates, perturbation transport."""
    input:
        emb=embedding_input,
        data=processed_input,
    output:
        scores="results/scores/bridge/{method}/{dataset}.json",
        samples="results/scores/bridge/{method}/{dataset}.samples.npz",
    params:
        bridge=config["tasks"]["bridge"],
        kind=bridge_kind,
    log:
        "logs/score_bridge/{method}/{dataset}.log",
    benchmark:
        "results/benchmarks/score_bridge/{method}/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=mem(8000),
        runtime=runtime(60),
    conda:
        ENV
    script:
        "../scripts/score_bridge.py"
