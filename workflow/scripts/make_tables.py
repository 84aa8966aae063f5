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

from scjepa.report.tables import render_rule
from scjepa.tasks.common import setup_script_logging

if "snakemake" in globals():
    setup_script_logging(snakemake)  # noqa: F821
    render_rule(snakemake.input, snakemake.params, snakemake.output)  # noqa: F821
