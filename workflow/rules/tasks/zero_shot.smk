# Task 'zero_shot': its scoring rule. The task itself (roles, methods served, tables, figures) is declared in
# the task registry, scjepa.task_registry; a task the library does not declare calls register_task(...) here.
# Each rule reads the method contract (results/embeddings/{method}/{dataset}.h5ad) or, for fine-tuning,
# the model directory, and writes the score records results/scores/zero_shot/{method}/{dataset}[/{seed}].json.


from scjepa import eval_costs as _costs


def _zero_shot_cost(wildcards, input, shape_of):
    """Exact kNN over (reference x query) pairs + the probe's worst case (scjepa.eval_costs)."""
    shape = shape_of(input.processed)
    zs = config["tasks"]["zero_shot"]
    return shape and _costs.zero_shot_cost(shape, ref_split=zs["reference_split"], query_split=zs["query_split"],
                                           probe=zs["linear_probe"])


ZERO_SHOT_MEM, ZERO_SHOT_RUNTIME = _costs.resources("zero_shot", _zero_shot_cost)


rule score_zero_shot:
    """Frozen-encoder annotation: kNN (k=5) and a linear probe, reference -> query split."""
    input:
        unpack(evaluation_guards),
        emb=embedding_input,
        processed=processed_input,
        provenance=lambda w: f"resources/datasets/{w.dataset}/provenance.json",
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
        mem_mb=ZERO_SHOT_MEM,  # from the processed file's split sizes at scheduling time (scjepa.eval_costs)
        runtime=ZERO_SHOT_RUNTIME,
    conda:
        ENV
    script:
        "../../scripts/score_zero_shot.py"
