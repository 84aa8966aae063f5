"""Rule check_leakage: no evaluation test donor is a corpus train/val donor (scjepa.data.leakage)."""

from scjepa.data.leakage import check_leakage, read_obs_columns
from scjepa.io import write_json
from scjepa.logs import rule_log

with rule_log(snakemake.log[0]) as log:
    p, on = snakemake.params, list(snakemake.params.by)
    corpus_obs = read_obs_columns(snakemake.input.corpus, [*on, "split"], key=f"datasets.{p.corpus}.keep_columns")
    paths = {p.corpus: snakemake.input.corpus, **dict(zip(p.names, snakemake.input.datasets))}
    evaluation = {n: read_obs_columns(f, [*on, "split"], key=f"datasets.{n}.keep_columns")
                  for n, f in zip(p.names, snakemake.input.datasets)}
    report = check_leakage(corpus_obs, evaluation, on, corpus=p.corpus, paths=paths)
    log.info("no leak: %s", report)
    write_json(report, snakemake.output.report)
