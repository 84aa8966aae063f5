# Task 'bridge': its scoring rule. The task itself (roles, methods served, tables, figures) is declared in
# the task registry, scjepa.task_registry; a task the library does not declare calls register_task(...) here.
# Each rule reads the method contract (results/embeddings/{method}/{dataset}.h5ad) or, for fine-tuning,
# the model directory, and writes the score records results/scores/bridge/{method}/{dataset}[/{seed}].json.


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
        "../../scripts/score_bridge.py"
