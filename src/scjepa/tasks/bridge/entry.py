"""The entry point of rule ``score_bridge`` (``workflow/scripts/score_bridge.py``: ``run(snakemake, score_rule)``).

Rule interface (a :class:`scjepa.rule.Rule`):

    input:   emb     results/embeddings/{method}/{dataset}.h5ad (obs of the processed dataset + obsm['X_emb'])
             data    results/data/{dataset}/processed.h5ad (X log1p; obs time/fate or condition/cell_type)
    params:  bridge  the validated ``tasks.bridge`` block (every key; :class:`BridgeConfig` rejects unknown ones)
             kind    "timecourse" or "perturbation"
             method, dataset (or the wildcards of those names); record_failures (optional: a failure
             writes a "failed" record instead of failing the job)
    output:  scores  results/scores/bridge/{method}/{dataset}.json (score record, docs/CONTRACTS.md)
             samples results/scores/bridge/{method}/{dataset}.samples.npz (figure samples)

The samples file is written first and the record last, so a record on disk means both are complete. A
metric the dataset has no ground truth for (fates without a fate column) is listed in the record's
``metrics_unavailable`` with the reason, and the tables show it as "no truth".
"""

from __future__ import annotations

import logging

from scjepa.rule import Rule


def score_rule(rule: Rule) -> dict:
    from scjepa.contracts import guarded_record, read_embedding, write_score
    from scjepa.io import read_h5ad
    from scjepa.tasks.bridge.config import BridgeConfig
    from scjepa.tasks.bridge.score import empty_samples, score_bridge, write_samples

    log = logging.getLogger("scjepa.scripts.bridge")
    method, dataset = rule.method_dataset()
    kind = str(rule.params["kind"])
    options = dict(rule.params["bridge"])
    out: dict = {}

    def compute():
        cfg = BridgeConfig.from_dict(options)
        data = read_h5ad(rule.input["data"])
        emb = read_embedding(rule.input["emb"], list(data.obs_names))
        res = score_bridge(emb, data, kind, cfg, data_path=rule.input["data"])
        out["samples"], out["unavailable"] = res.samples, res.unavailable
        return res.metrics, dict(res.config, embedding=str(rule.input["emb"]), data=str(rule.input["data"]))

    record = guarded_record("bridge", method, dataset, compute, context={"kind": kind}, log=log,
                            record_failures=bool(rule.params.get("record_failures") or False))
    if record["status"] != "ok":  # the figure rule still gets a samples file, saying why it is empty
        why = record["config"]["reason" if record["status"] == "n/a" else "error"]
        out["samples"] = empty_samples(kind, record["status"], why)
    elif out.get("unavailable"):
        record["metrics_unavailable"] = dict(out["unavailable"])
    write_samples(out["samples"], rule.output["samples"])
    write_score(record, rule.output["scores"])
    log.info("bridge/%s/%s: %s %s", method, dataset, record["status"],
             {k: round(v, 4) for k, v in record["metrics"].items() if "_t" not in k and not k.endswith("_sd")})
    return record
