"""Bridge benchmark of one method's latent on one dataset (rule score_bridge).

Snakemake interface:

    input:
        emb        results/embeddings/{method}/{dataset}.h5ad   (obs of the processed dataset + obsm['X_emb'])
        data       results/data/{dataset}/processed.h5ad        (X log1p; obs time/fate or condition/cell_type)
    params:
        bridge     dict of tasks.bridge options (scjepa.tasks.bridge.BridgeConfig; unknown keys are errors)
        kind       "timecourse" or "perturbation"
        method, dataset   default: the wildcards of the same names
        record_failures   default False (True: an error writes a "failed" record instead of failing the job)
    output:
        scores     results/scores/bridge/{method}/{dataset}.json   (score record, docs/CONTRACTS.md)
        samples    results/scores/bridge/{method}/{dataset}.samples.npz  (snapshots + bridge paths, for the figure)
    log:
        one file

The samples file is written first and the record last, so a record on disk means both are complete.
"""

from scjepa.contracts import guarded_record, read_embedding, write_score
from scjepa.tasks.common import setup_script_logging, smk_get, smk_identity


def main(snakemake):
    import logging

    from scjepa.io import read_h5ad
    from scjepa.tasks.bridge import BridgeConfig, empty_samples, score_bridge, write_samples

    setup_script_logging(snakemake)
    log = logging.getLogger("scjepa.scripts.bridge")
    method, dataset, _ = smk_identity(snakemake)
    kind = str(smk_get(snakemake.params, "kind", "timecourse"))
    options = dict(smk_get(snakemake.params, "bridge", {}) or {})
    out = {}

    def compute():
        cfg = BridgeConfig.from_dict(options)
        data = read_h5ad(snakemake.input.data)
        emb = read_embedding(snakemake.input.emb, list(data.obs_names))
        res = score_bridge(emb, data, kind, cfg, data_path=snakemake.input.data)
        out["samples"] = res.samples
        return res.metrics, dict(res.config, embedding=str(snakemake.input.emb), data=str(snakemake.input.data))

    record = guarded_record("bridge", method, dataset, compute, context={"kind": kind}, log=log,
                            record_failures=bool(smk_get(snakemake.params, "record_failures", False)))
    if record["status"] != "ok":  # the figure rule still gets a samples file, saying why it is empty
        why = record["config"]["reason" if record["status"] == "n/a" else "error"]
        out["samples"] = empty_samples(kind, record["status"], why)
    write_samples(out["samples"], snakemake.output.samples)
    write_score(record, snakemake.output.scores)
    log.info("bridge/%s/%s: %s %s", method, dataset, record["status"],
             {k: round(v, 4) for k, v in record["metrics"].items() if "_t" not in k})
    return record


if "snakemake" in globals():
    main(snakemake)  # noqa: F821
