"""Render one paper-style table (Markdown, CSV, LaTeX) from score records.

Every (method, dataset) the table expects is shown: a record with status "n/a"/"failed" renders
as such, an ``na`` entry renders ``n/a``, and a record file that is absent (the job failed under
``--keep-going``) renders ``failed``, so list the expected paths, not only the existing ones.

Snakemake interface:

    input:
        scores     list of score-record JSON paths (missing files allowed: they render "failed")
    params:
        table      "table1_in_distribution" | "table2_out_of_distribution" | "table3_spatial" |
                   "table4_ablation" | "table_integration" | "generic"
        methods    list of row names (methods; ablation variants for table4)
        datasets   list of dataset names (column groups)
        na         list of [task, method, dataset] or {"task":..,"method":..,"dataset":..}; "*" = any
                   (e.g. {"task": "finetune", "method": "pca"})
        seeds      list of expected seeds (fine-tune; integration runs for table_integration); optional
        row_labels, dataset_labels   optional dicts name -> display name
        probe      table1/2/4: add linear-probe columns (default False)
        digits     default 3
        generic only: task, metric, higher_is_better (default True), name, caption, metric_label
    output:
        md, csv, tex   results/tables/{table}.md / .csv / .tex
    log:
        optional, one file
"""

from scjepa.report import tables as T
from scjepa.tasks.common import setup_script_logging, smk_get


def main(snakemake):
    setup_script_logging(snakemake)
    p = snakemake.params
    paths = snakemake.input.scores
    paths = [paths] if isinstance(paths, str) else list(paths)
    records = T.load_records(paths)
    which = smk_get(p, "table")
    methods, datasets = list(p.methods), list(p.datasets)
    common = dict(
        na=list(smk_get(p, "na", []) or []),
        seeds=smk_get(p, "seeds"),
        row_labels=smk_get(p, "row_labels"),
        dataset_labels=smk_get(p, "dataset_labels"),
        digits=int(smk_get(p, "digits", 3)),
    )
    probe = bool(smk_get(p, "probe", False))
    if which in ("table1_in_distribution", "table2_out_of_distribution", "table4_ablation"):
        table = getattr(T, which)(records, methods, datasets, probe=probe, **common)
    elif which in ("table3_spatial", "table_integration"):
        table = getattr(T, which)(records, methods, datasets, **common)
    elif which == "generic":
        table = T.make_table(
            records,
            methods,
            datasets,
            p.metric,
            task=smk_get(p, "task"),
            name=smk_get(p, "name", "table"),
            caption=smk_get(p, "caption", ""),
            na=common["na"],
            higher_is_better=bool(smk_get(p, "higher_is_better", True)),
            metric_label=smk_get(p, "metric_label"),
            row_labels=common["row_labels"],
            col_labels=common["dataset_labels"],
            expected_seeds=common["seeds"],
            digits=common["digits"],
        )
    else:
        raise ValueError(f"params.table must name a table, got {which!r}")
    out = snakemake.output
    T.write_table(table, md=smk_get(out, "md"), csv=smk_get(out, "csv"), tex=smk_get(out, "tex"))


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
