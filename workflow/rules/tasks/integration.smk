# Task 'integration': its scoring rule. The task itself (roles, methods served, tables, figures) is declared in
# the task registry, scjepa.task_registry; a task the library does not declare calls register_task(...) here.
# Each rule reads the method contract (results/embeddings/{method}/{dataset}.h5ad) or, for fine-tuning,
# the model directory, and writes the score records results/scores/integration/{method}/{dataset}[/{seed}].json.


from scjepa import eval_costs as _costs


def _integration_cost(wildcards, input, shape_of):
    """runs x scib-metrics at min(subsample x cells, max_cells) cells; memory holds the processed X whole."""
    shape = shape_of(input.processed)
    ti = config["tasks"]["integration"]
    return shape and _costs.integration_cost(shape, runs=ti["runs"], subsample=ti["subsample"],
                                             max_cells=ti.get("max_cells", 50_000))


INTEGRATION_MEM, INTEGRATION_RUNTIME = _costs.resources("integration", _integration_cost)


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
        mem_mb=INTEGRATION_MEM,  # from the processed file's cells and non-zeros at scheduling time
        runtime=INTEGRATION_RUNTIME,
    conda:
        ENV
    script:
        "../../scripts/score_integration.py"
