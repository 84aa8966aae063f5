# Hyper-parameter sweeps (config `sweeps:`; docs/PROTOCOL.md §2.5). Each sweep's grid points are method
# variants (scjepa.config.sweep_variants) that their family's rules pretrain and embed like any method;
# here each variant is scored on the VALIDATION split of one labelled dataset (kNN, train -> val; the
# test split is dropped before the embedding is read) and every sweep gets a table and a figure:
# results/tables/sweep_<name>.{md,csv,tex}, results/figures/sweep_<name>.<fmt>. The variants never
# enter an evaluation table.


def sweep_of(name):
    return config["sweeps"][name]


def sweep_dataset(name):
    return sweep_of(name)["score"].get("dataset") or CORPUS


def sweep_record(variant):
    entry = SWEEP_VARIANTS[variant]
    return f"results/sweeps/{entry['sweep']}/{variant}.json"


def sweep_records(wildcards):
    return [sweep_record(v) for v, e in SWEEP_VARIANTS.items() if e["sweep"] == wildcards.sweep]


def sweep_variant_params(wildcards):
    e = SWEEP_VARIANTS[wildcards.method]
    return {"sweep": e["sweep"], "base": e["base"], "point": e["point"], "point_index": e["point_index"],
            "pretraining_seed": e["seed"]}


def sweep_score_params(key):
    def _param(wildcards):
        score = sweep_of(SWEEP_VARIANTS[wildcards.method]["sweep"])["score"]
        if key == "k":
            return score.get("k") or config["tasks"]["zero_shot"]["k"]
        if key == "dataset":
            return sweep_dataset(SWEEP_VARIANTS[wildcards.method]["sweep"])
        return score[key]

    return _param


rule score_sweep:
    """One variant of a sweep: kNN from the train to the val split (test cells never read)."""
    input:
        emb=lambda w: embedding_path(w.method, sweep_score_params("dataset")(w)),
        processed=lambda w: processed_path(sweep_score_params("dataset")(w)),
    output:
        score="results/sweeps/{sweep}/{method}.json",
    wildcard_constraints:
        method=names_regex(SWEEP_VARIANTS),
    params:
        method="{method}",
        dataset=sweep_score_params("dataset"),
        k=sweep_score_params("k"),
        max_reference_cells=sweep_score_params("max_reference_cells"),
        max_query_cells=sweep_score_params("max_query_cells"),
        seed=config["seed"],
        variant=sweep_variant_params,
    log:
        "logs/score_sweep/{sweep}/{method}.log",
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=runtime(30),
    conda:
        ENV
    script:
        "../scripts/score_sweep.py"


rule report_sweep:
    """A sweep's table (validation score per grid point, the best bold and named) and figure."""
    input:
        code=[library_file("scjepa.report.sweep"), library_file("scjepa.report.tables"),
              library_file("scjepa.report.figures")],
        scores=sweep_records,
    output:
        md="results/tables/sweep_{sweep}.md",
        csv="results/tables/sweep_{sweep}.csv",
        tex="results/tables/sweep_{sweep}.tex",
        **{fmt: f"results/figures/sweep_{{sweep}}.{fmt}" for fmt in config["report"]["formats"]},
    wildcard_constraints:
        sweep=names_regex(config["sweeps"]),
    params:
        name="{sweep}",
        points=lambda w: scjepa_config.sweep_points(sweep_of(w.sweep)),
        metric=lambda w: sweep_of(w.sweep)["score"]["metric"],
        seeds=lambda w: sweep_of(w.sweep).get("seeds") or [config["seed"]],
        dataset=lambda w: sweep_dataset(w.sweep),
        base=lambda w: sweep_of(w.sweep)["method"],
        description=lambda w: sweep_of(w.sweep).get("description", ""),
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    log:
        "logs/report/sweep_{sweep}.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_sweep.py"
