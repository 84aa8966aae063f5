# Report rules: paper-style tables (Markdown, CSV, LaTeX) and figures (PNG, PDF), flagged for
# `snakemake --report`. Every expected (method, dataset) cell is listed: n/a where a method does not
# serve a task, failed where its record says so.


rule table_in_distribution:
    """Table 1: zero-shot kNN and fine-tuned annotation on in-distribution datasets."""
    input:
        code=library_file("scjepa.report.tables"),
        scores=table_scores("in_distribution"),
    output:
        md=report("results/tables/table1_in_distribution.md", category="Tables", caption="../report/table1.rst"),
        csv="results/tables/table1_in_distribution.csv",
        tex="results/tables/table1_in_distribution.tex",
    params:
        table="table1_in_distribution",
        methods=main_methods(),
        datasets=datasets_with_role("in_distribution"),
        na=na_cells(),
        seeds=FINETUNE_SEEDS,
        row_labels=method_labels(),
        probe=config["tasks"]["zero_shot"]["linear_probe"],
    log:
        "logs/report/table1_in_distribution.log",
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_tables.py"


rule table_out_of_distribution:
    """Tables 2-3 of the paper: the same on out-of-distribution datasets."""
    input:
        code=library_file("scjepa.report.tables"),
        scores=table_scores("out_of_distribution"),
    output:
        md=report("results/tables/table2_out_of_distribution.md", category="Tables", caption="../report/table2.rst"),
        csv="results/tables/table2_out_of_distribution.csv",
        tex="results/tables/table2_out_of_distribution.tex",
    params:
        table="table2_out_of_distribution",
        methods=main_methods(),
        datasets=datasets_with_role("out_of_distribution"),
        na=na_cells(),
        seeds=FINETUNE_SEEDS,
        row_labels=method_labels(),
        probe=config["tasks"]["zero_shot"]["linear_probe"],
    log:
        "logs/report/table2_out_of_distribution.log",
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_tables.py"


rule table_spatial:
    """Spatial transfer: zero-shot within the tissue, fine-tuned, cross-platform from a dissociated reference."""
    input:
        code=library_file("scjepa.report.tables"),
        scores=table_scores("spatial"),
    output:
        md=report("results/tables/table3_spatial.md", category="Tables", caption="../report/table3.rst"),
        csv="results/tables/table3_spatial.csv",
        tex="results/tables/table3_spatial.tex",
    params:
        table="table3_spatial",
        methods=main_methods(),
        datasets=datasets_with_role("spatial"),
        na=na_cells(),
        seeds=FINETUNE_SEEDS,
        row_labels=method_labels(),
    log:
        "logs/report/table3_spatial.log",
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_tables.py"


rule table_ablation:
    """Table 4: scJEPA ablations (w/o reconstruction, w/o LeJEPA, 2 global views, SIGReg window)."""
    input:
        code=library_file("scjepa.report.tables"),
        scores=table_scores("ablation"),
    output:
        md=report("results/tables/table4_ablation.md", category="Tables", caption="../report/table4.rst"),
        csv="results/tables/table4_ablation.csv",
        tex="results/tables/table4_ablation.tex",
    params:
        table="table4_ablation",
        methods=ablation_methods(),
        datasets=datasets_with_role("in_distribution"),
        na=na_cells(),
        seeds=FINETUNE_SEEDS,
        row_labels=method_labels(),
        probe=config["tasks"]["zero_shot"]["linear_probe"],
    log:
        "logs/report/table4_ablation.log",
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_tables.py"


rule table_integration:
    """scIB bio-conservation, batch correction and total (mean ± sd over runs)."""
    input:
        code=library_file("scjepa.report.tables"),
        scores=table_scores("integration"),
    output:
        md=report("results/tables/table_integration.md", category="Tables", caption="../report/table_integration.rst"),
        csv="results/tables/table_integration.csv",
        tex="results/tables/table_integration.tex",
    params:
        table="table_integration",
        methods=main_methods(),
        datasets=datasets_with_role("integration"),
        na=na_cells(),
        seeds=list(range(config["tasks"]["integration"]["runs"])),
        row_labels=method_labels(),
    log:
        "logs/report/table_integration.log",
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/make_tables.py"


rule table_bridge:
    """Bridge benchmark: one table per readout (W1 vs McCann, fate accuracy, perturbation r²)."""
    input:
        code=library_file("scjepa.report.tables"),
        scores=table_scores("bridge"),
    output:
        md=report("results/tables/table_bridge_{readout}.md", category="Tables", caption="../report/table_bridge.rst"),
        csv="results/tables/table_bridge_{readout}.csv",
        tex="results/tables/table_bridge_{readout}.tex",
    wildcard_constraints:
        readout=names_regex(BRIDGE_READOUTS),
    params:
        table="generic",
        task="bridge",
        methods=main_methods(),
        datasets=bridge_readout_datasets,
        metric=bridge_readout_metric,
        higher_is_better=bridge_readout_higher,
        metric_label=bridge_readout_label,
        name="table_bridge_{readout}",
        caption=bridge_readout_label,
        na=na_cells(),
        row_labels=method_labels(),
    log:
        "logs/report/table_bridge_{readout}.log",
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
        scores=table_scores("integration"),
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
