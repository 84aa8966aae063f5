"""Draw one paper figure (PNG + PDF).

Snakemake interface (``params.figure`` picks the figure):

    figure = "integration"  (Fig. 2)
        input:  scores       list of integration score-record paths (missing files allowed)
        params: methods      list (x axis order); datasets (optional list; default: all in the records)
    figure = "spatial"  (Fig. 3)
        input:  scores       list of score records: task "spatial" for the dataset, and optionally its
                             "finetune" records (bars)
                predictions  list of predictions CSVs, aligned with params.methods (missing allowed)
        params: methods, dataset,
                select_metric  default "transfer_macro_f1" (best method for the tissue panels; use
                               "knn_macro_f1" to show within-dataset kNN on the test cells)
    figure = "training_dynamics"  (Fig. 4)
        input:  curves       list of model directories (or curve.csv paths), aligned with params.methods
        params: methods
    every figure:
        params: row_labels   optional dict method -> display name
                style        optional dict of matplotlib rcParams (config report.style)
                dpi          optional PNG resolution (config report.dpi)
        output: png, pdf
        log:    optional, one file
"""

from scjepa.report import figures as F
from scjepa.report.tables import load_records
from scjepa.tasks.common import setup_script_logging, smk_get


def _as_list(x):
    return [x] if isinstance(x, str) else list(x)


def main(snakemake):
    setup_script_logging(snakemake)
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    F.set_style(smk_get(p, "style"), smk_get(p, "dpi"))
    which = smk_get(p, "figure")
    methods = list(p.methods)
    labels = smk_get(p, "row_labels")
    files = dict(png=smk_get(out, "png"), pdf=smk_get(out, "pdf"))
    if which == "integration":
        records = load_records(_as_list(inp.scores))
        datasets = smk_get(p, "datasets")
        F.fig2_integration(records, methods, datasets=list(datasets) if datasets else None, row_labels=labels, **files)
    elif which == "spatial":
        records = load_records(_as_list(inp.scores))
        preds = _as_list(smk_get(inp, "predictions", []))
        if len(preds) != len(methods):
            raise ValueError(
                f"{len(preds)} predictions files for {len(methods)} methods; align them with params.methods"
            )
        F.fig3_spatial(
            records,
            dict(zip(methods, preds)),
            methods,
            dataset=p.dataset,
            select_metric=smk_get(p, "select_metric", "transfer_macro_f1"),
            row_labels=labels,
            **files,
        )
    elif which == "training_dynamics":
        curves = _as_list(inp.curves)
        if len(curves) != len(methods):
            raise ValueError(f"{len(curves)} curves for {len(methods)} methods; align them with params.methods")
        F.fig4_training_dynamics(dict(zip(methods, curves)), row_labels=labels, **files)
    else:
        raise ValueError(f"params.figure must be integration, spatial or training_dynamics, got {which!r}")


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
