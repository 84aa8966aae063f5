# Task 'spatial': its scoring rule. The task itself (roles, methods served, tables, figures) is declared in
# the task registry, scjepa.task_registry; a task the library does not declare calls register_task(...) here.
# Each rule reads the method contract (results/embeddings/{method}/{dataset}.h5ad) or, for fine-tuning,
# the model directory, and writes the score records results/scores/spatial/{method}/{dataset}[/{seed}].json.


from scjepa import eval_costs as _costs


def _spatial_cost(wildcards, input, shape_of):
    """Within-tissue kNN + probe, and kNN transfer from every reference cell (scjepa.eval_costs)."""
    shape = shape_of(input.processed)
    ref = shape_of(input.ref_processed) if "ref_processed" in input.keys() else None
    if shape is None or ("ref_processed" in input.keys() and ref is None):
        return None
    return _costs.spatial_cost(shape, ref, probe=config["tasks"]["zero_shot"]["linear_probe"])


SPATIAL_MEM, SPATIAL_RUNTIME = _costs.resources("spatial", _spatial_cost)


rule score_spatial:
    """Spatial: zero-shot kNN within the tissue and cross-platform transfer from a dissociated reference."""
    input:
        unpack(evaluation_guards),
        unpack(spatial_inputs),
    output:
        score="results/scores/spatial/{method}/{dataset}.json",
        predictions="results/scores/spatial/{method}/{dataset}.predictions.csv",
    params:
        reference=spatial_reference,
        hierarchy=hierarchy_params,
        k=config["tasks"]["spatial"]["k"],
        reference_split=config["tasks"]["zero_shot"]["reference_split"],
        query_split=config["tasks"]["zero_shot"]["query_split"],
        probe=config["tasks"]["zero_shot"]["linear_probe"],
        seed=config["seed"],
    log:
        "logs/score_spatial/{method}/{dataset}.log",
    threads: 1
    resources:
        mem_mb=SPATIAL_MEM,  # from the spatial and reference cell counts at scheduling time (scjepa.eval_costs)
        runtime=SPATIAL_RUNTIME,
    conda:
        ENV
    script:
        "../../scripts/score_spatial.py"
