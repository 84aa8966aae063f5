# Report rules: paper-style tables (Markdown, CSV, LaTeX) and figures (PNG, PDF), flagged for
# `snakemake --report`. Every expected (method, dataset) cell is listed: n/a where a method does not
# serve a task, failed where its record says so.


# One table rule per table the task registry declares (scjepa.task_registry): Tables 1-4, integration,
# the bridge readouts, and the tables of tasks added in workflow/rules/tasks/.
for _tab in tasks_registry.tables():

    rule:
        name:
            _tab.rule
        input:
            code=[library_file("scjepa.report.tables"), library_file("scjepa.report.render")] + (
                [library_file("scjepa.report.bridge_tables")] if _tab.renderer.startswith("table_bridge_") else []),
            scores=table_scores(_tab),
        output:
            md=report(f"results/tables/{_tab.name}.md", category="Tables", caption=f"../report/{_tab.caption}"),
            csv=f"results/tables/{_tab.name}.csv",
            tex=f"results/tables/{_tab.name}.tex",
            **scaled_table_outputs(_tab),
        params:
            **table_params(_tab),
        log:
            f"logs/report/{_tab.name}.log",
        threads: 1
        resources:
            mem_mb=mem(1000),
            runtime=runtime(10),
        conda:
            ENV
        script:
            "../scripts/make_tables.py"


rule figure_integration:
    """Fig. 2: scIB scores per method, boxplots over runs."""
    input:
        code=[library_file("scjepa.report.figures"), library_file("scjepa.report.style")],
        scores=table_scores(table_spec("table_integration")),
    output:
        png=report("results/figures/fig2_integration.png", category="Figures", caption="../report/fig2.rst"),
        pdf="results/figures/fig2_integration.pdf",
    params:
        figure="integration",
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
        methods=task_methods("integration"),
        row_labels=method_labels(),
    log:
        "logs/report/figure_integration.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_figures.py"


rule figure_spatial:
    """Fig. 3: the tissue coloured by true and transferred cell types; F1 per method."""
    input:
        code=[library_file("scjepa.report.figures"), library_file("scjepa.report.style")],
        scores=spatial_figure_scores,
        predictions=spatial_figure_predictions,
    output:
        png=report("results/figures/fig3_spatial_{dataset}.png", category="Figures", caption="../report/fig3.rst"),
        pdf="results/figures/fig3_spatial_{dataset}.pdf",
    params:
        figure="spatial",
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
        methods=task_methods("spatial"),
        dataset="{dataset}",
        row_labels=method_labels(),
        na=na_cells(),  # PCA's fine-tune bar reads n/a, as in Table 3
    log:
        "logs/report/figure_spatial_{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_figures.py"


rule figure_training_dynamics:
    """Fig. 4: each loss term and the val kNN macro-F1 against steps, per torch method."""
    input:
        code=[library_file("scjepa.report.figures"), library_file("scjepa.report.style")],
        curves=curve_inputs(),
    output:
        png=report("results/figures/fig4_training_dynamics.png", category="Figures", caption="../report/fig4.rst"),
        pdf="results/figures/fig4_training_dynamics.pdf",
    params:
        figure="training_dynamics",
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
        methods=torch_methods(),
        row_labels=method_labels(),
    log:
        "logs/report/figure_training_dynamics.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_figures.py"


rule figure_bridge:
    """Bridge paths: each method's latent with snapshots and sampled Schrödinger-bridge paths."""
    input:
        code=[library_file("scjepa.report.figures"), library_file("scjepa.report.bridge_figures")],
        samples=bridge_figure_samples,
    output:
        png=report("results/figures/fig5_bridge_{dataset}.png", category="Figures", caption="../report/fig5.rst"),
        pdf="results/figures/fig5_bridge_{dataset}.pdf",
    params:
        methods=task_methods("bridge"),
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
        row_labels=method_labels(),
    log:
        "logs/report/figure_bridge_{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_bridge_figure.py"


# ---- the benchmark at a glance and what it costs (issue 19) ------------------------------------------


def summary_tables():
    """The tables the summary ranks: every registry table but the ablation (rows = scJEPA variants), each
    with its task family and the params its own table rule gets."""
    from scjepa.report.summary import family_of

    out = []
    for task in tasks_registry.REGISTRY.values():
        for tab in task.tables:
            if tab.rows != "ablation" and table_datasets(tab) and table_rows(tab):
                out.append({"family": family_of(task.name), "params": table_params(tab)})
    return out


def summary_scores(wildcards=None):
    paths = []
    for task in tasks_registry.REGISTRY.values():
        for tab in task.tables:
            if tab.rows != "ablation" and table_datasets(tab) and table_rows(tab):
                paths += [p for p in table_scores(tab) if p not in paths]
    return paths


def method_controls():
    return {m: method_entry(m)["control"] for m in METHODS if method_entry(m)["control"]}


def embedded_datasets(method):
    """Datasets the run embeds with a method: those of every table it is a row of, for each task of the table
    that reads embeddings (fine-tuning reads the model), with the spatial datasets' dissociated references --
    the same (method, dataset) pairs as the score records the tables read (``table_scores``)."""
    out = []
    for tab in tasks_registry.tables():
        if method not in table_rows(tab):
            continue
        for task in tab.reads:
            if task == "finetune" or task not in method_entry(method)["serves"]:
                continue
            for d in table_datasets(tab):
                for x in (d, DATASETS[d].get("reference") if task == "spatial" else None):
                    if x and x not in out:
                        out.append(x)
    return out


COST_KINDS = {"encoder": "pretrained", "embedding": "pretrained", "per_dataset": "per dataset",
              "control": "control"}


def cost_methods():
    """Per method: its benchmark files and logs (params, not inputs: a run from before a rule had a
    benchmark reports 'not measured' instead of rerunning its jobs) and its GPU request."""
    out = []
    for m in METHODS:
        e = method_entry(m)
        kind = COST_KINDS[tasks_registry.family_kind(e["family"])]
        ds = embedded_datasets(m)
        out.append({"method": m, "label": e["label"], "kind": kind, "gpus": int(e["gpu"]),
                    "device": config["training"]["device"], "control": e["control"] or None,
                    "pretrain": f"results/benchmarks/pretrain/{m}.tsv" if kind == "pretrained" else None,
                    "pretrain_log": f"logs/pretrain/{m}.log" if kind == "pretrained" else None,
                    "embed": {d: f"results/benchmarks/embed/{m}/{d}.tsv" for d in ds},
                    "embed_logs": {d: f"logs/embed/{m}/{d}.log" for d in ds}})
    return out


def cost_datasets():
    return sorted({d for m in METHODS for d in embedded_datasets(m)})


def all_score_paths(wildcards=None):
    """Every score record a table reads: the cost rule runs after every job it measures."""
    out = []
    for tab in tasks_registry.tables():
        if table_datasets(tab) and table_rows(tab):
            out += [p for p in table_scores(tab) if p not in out]
    return out


rule report_summary:
    """The summary: every method's rank in every readout of every table and per task family."""
    input:
        code=[library_file("scjepa.report.summary"), library_file("scjepa.report.tables"),
              library_file("scjepa.report.figures"), library_file("scjepa.report.style")],
        scores=summary_scores(),
    output:
        md=report("results/tables/table_summary.md", category="0 Summary", caption="../report/summary_table.rst"),
        csv="results/tables/table_summary.csv",
        tex="results/tables/table_summary.tex",
        png=report("results/figures/fig_summary.png", category="0 Summary", caption="../report/summary.rst"),
        pdf="results/figures/fig_summary.pdf",
    params:
        tables=summary_tables(),
        methods=main_methods(),
        row_labels=method_labels(),
        controls=method_controls(),
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    log:
        "logs/report/summary.log",
    benchmark:
        "results/benchmarks/report/summary.tsv"
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_summary.py"


rule report_cost:
    """Cost per method from the benchmark files: pretraining and embedding time, memory, GPU-seconds."""
    input:
        code=[library_file("scjepa.report.cost"), library_file("scjepa.report.figures"),
              library_file("scjepa.report.style")],
        processed=[processed_path(d) for d in cost_datasets()],
        scores=all_score_paths(),
    output:
        md=report("results/tables/table_cost.md", category="0 Summary", caption="../report/cost_table.rst"),
        csv="results/tables/table_cost.csv",
        tex="results/tables/table_cost.tex",
        png=report("results/figures/fig_cost.png", category="0 Summary", caption="../report/cost.rst"),
        pdf="results/figures/fig_cost.pdf",
    params:
        methods=cost_methods(),
        datasets=cost_datasets(),
        style=config["report"]["style"],
        dpi=config["report"]["dpi"],
    log:
        "logs/report/cost.log",
    benchmark:
        "results/benchmarks/report/cost.tsv"
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_cost.py"


# ---- the report's landing page (workflow/report/workflow.rst, the Snakefile's `report:` directive) -----


def _relative_to_workflow(path):
    p = Path(path).resolve()
    return str(p.relative_to(WORKFLOW_DIR)) if p.is_relative_to(WORKFLOW_DIR) else str(path)


def run_info():
    """What this run is, for the landing page's Jinja (``snakemake.config["report"]["run_info"]``): the config
    files, software versions, the dates, and each torch method's training budget as it ran (steps from its
    curve.csv, where the model exists). Cheap: package metadata and the last line of a few small files; it
    enters no rule's params, so it never reruns a job."""
    import datetime
    import importlib.metadata as md
    import platform

    versions = {"python": platform.python_version()}
    for pkg in ("scjepa", "snakemake", "torch", "numpy", "anndata", "scanpy", "scib-metrics", "scvi-tools",
                "harmonypy", "POT", "matplotlib"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    budget = []
    for m in torch_methods():
        steps = None
        curve = Path(model_dir(m)) / "curve.csv"
        if curve.exists():
            lines = curve.read_text().strip().splitlines()
            head = lines[0].split(",") if lines else []
            if "step" in head and len(lines) > 1:
                try:
                    steps = int(float(lines[-1].split(",")[head.index("step")]))
                except ValueError:
                    steps = None
        hp = training_hparams(m)
        budget.append({"method": method_entry(m)["label"], "epochs": hp.get("max_epochs"),
                       "max_steps": hp.get("max_steps"), "batch_size": hp.get("batch_size"),
                       "steps": steps if steps is not None else "not trained yet"})
    tables = sorted(Path("results/tables").glob("*.md"))
    newest = max((p.stat().st_mtime for p in tables), default=None)
    fmt = "%Y-%m-%d %H:%M UTC"
    return {
        "configfiles": [_relative_to_workflow(f) for f in workflow.config_settings.configfiles] or ["config/config.yaml"],
        "versions": versions,
        "budget": budget,
        "report_date": datetime.datetime.now(datetime.timezone.utc).strftime(fmt),
        "results_date": datetime.datetime.fromtimestamp(newest, datetime.timezone.utc).strftime(fmt)
        if newest else "no results yet",
        "synthetic": all(DATASETS[d]["source"] == "synthetic" for d in DATASETS),
        "controls": [f'{method_entry(m)["label"]} ({method_entry(m)["control"]})' for m in METHODS
                     if method_entry(m)["control"]],
        "methods": [method_entry(m)["label"] for m in main_methods() if not method_entry(m)["control"]],
        "ablations": [method_entry(m)["label"] for m in METHODS if method_entry(m)["ablation_of"]],
    }


config["report"]["run_info"] = run_info()
