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
            code=[library_file("scjepa.report.tables")] + (
                [library_file("scjepa.report.bridge_tables")] if _tab.renderer.startswith("table_bridge_") else []),
            scores=table_scores(_tab),
        output:
            md=report(f"results/tables/{_tab.name}.md", category="Tables", caption=f"../report/{_tab.caption}"),
            csv=f"results/tables/{_tab.name}.csv",
            tex=f"results/tables/{_tab.name}.tex",
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
        code=library_file("scjepa.report.figures"),
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
        code=library_file("scjepa.report.figures"),
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
        code=library_file("scjepa.report.figures"),
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
