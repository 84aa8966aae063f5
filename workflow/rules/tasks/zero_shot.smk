# Task 'zero_shot': its scoring rule. The task itself (roles, methods served, tables, figures) is declared in
# the task registry, scjepa.task_registry; a task the library does not declare calls register_task(...) here.
# Each rule reads the method contract (results/embeddings/{method}/{dataset}.h5ad) or, for fine-tuning,
# the model directory, and writes the score records results/scores/zero_shot/{method}/{dataset}[/{seed}].json.


rule score_zero_shot:
    """Frozen-encoder annotation: kNN (k=5) and a linear probe, reference -> query split."""
    input:
        unpack(evaluation_guards),
        emb=embedding_input,
        processed=processed_input,
    output:
        score="results/scores/zero_shot/{method}/{dataset}.json",
    params:
        k=config["tasks"]["zero_shot"]["k"],
        reference_split=config["tasks"]["zero_shot"]["reference_split"],
        query_split=config["tasks"]["zero_shot"]["query_split"],
        probe=config["tasks"]["zero_shot"]["linear_probe"],
        hierarchy=hierarchy_params,
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
        "../../scripts/score_zero_shot.py"
