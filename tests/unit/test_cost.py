"""Cost per method from hand-made Snakemake benchmark files: times, memory, GPU-seconds, per-1,000-cell rates."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pytest

from scjepa.contracts import score_record, write_score
from scjepa.report import cost as C
from scjepa.rule import Rule

HEAD = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, s, rss, cpu):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + f"{s}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")
    return str(path)


def _log(path, cvd):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"2026-01-01 00:00:00,000 INFO scjepa: CUDA_VISIBLE_DEVICES={cvd}\n")
    return str(path)


def _world(tmp_path):
    b, lg = tmp_path / "results" / "benchmarks", tmp_path / "logs"
    processed = {}
    for d, n in (("ds_a", 2000), ("ds_b", 500)):
        p = tmp_path / f"{d}.h5ad"
        ad.AnnData(np.zeros((n, 3), dtype=np.float32)).write_h5ad(p)
        processed[d] = str(p)
    methods = [
        # a GPU encoder: pretrained once on 2 GPUs (the scheduler set CUDA_VISIBLE_DEVICES), embeds both datasets
        {"method": "scjepa", "label": "scJEPA", "kind": "pretrained", "gpus": 2, "device": "auto", "control": None,
         "pretrain": _bench(b / "pretrain/scjepa.tsv", 100.0, 900.0, 80.0),
         "pretrain_log": _log(lg / "pretrain/scjepa.log", "0,1"),
         "embed": {"ds_a": _bench(b / "embed/scjepa/ds_a.tsv", 4.0, 500.0, 3.0),
                   "ds_b": _bench(b / "embed/scjepa/ds_b.tsv", 2.0, 400.0, 1.0)},
         "embed_logs": {"ds_a": _log(lg / "embed/scjepa/ds_a.log", "0"), "ds_b": _log(lg / "embed/scjepa/ds_b.log", "0")}},
        # PCA on the CPU: no GPU asked for
        {"method": "pca", "label": "PCA", "kind": "pretrained", "gpus": 0, "device": "auto", "control": None,
         "pretrain": _bench(b / "pretrain/pca.tsv", 10.0, 300.0, 9.0), "pretrain_log": None,
         "embed": {"ds_a": _bench(b / "embed/pca/ds_a.tsv", 1.0, 200.0, 1.0)}, "embed_logs": {}},
        # scVI asks for a GPU but the job ran where none was given: CPU, n/a
        {"method": "scvi", "label": "scVI", "kind": "per dataset", "gpus": 1, "device": "auto", "control": None,
         "pretrain": None, "embed": {"ds_b": _bench(b / "embed/scvi/ds_b.tsv", 50.0, 1200.0, 45.0)},
         "embed_logs": {"ds_b": _log(lg / "embed/scvi/ds_b.log", "unset")}},
        # a control whose run predates its benchmark file
        {"method": "random", "label": "Random", "kind": "control", "gpus": 0, "device": "auto",
         "control": "negative", "pretrain": None, "embed": {"ds_a": str(b / "embed/random/ds_a.tsv")},
         "embed_logs": {}},
    ]
    return methods, processed


def test_cost_rows_from_benchmark_files(tmp_path):
    methods, processed = _world(tmp_path)
    cells = {d: C.n_cells_h5ad(p) for d, p in processed.items()}
    assert cells == {"ds_a": 2000, "ds_b": 500}
    rows = {r.method: r for r in C.build_cost([{**m, "n_cells": cells} for m in methods])}
    sj = rows["scjepa"]
    assert sj.pretrain.s == 100.0 and sj.pretrain.cpu_s == 80.0 and sj.pretrain.max_rss_mb == 900.0
    assert sj.embed_s_per_1k == pytest.approx((4.0 / 2000 * 1000 + 2.0 / 500 * 1000) / 2)  # 2 s and 4 s -> 3
    # wall x the GPUs each job was given: pretraining on 2 ("0,1"), each embedding on 1 ("0")
    assert sj.gpu_seconds() == pytest.approx(100.0 * 2 + 4.0 + 2.0)
    assert sj.total_s == pytest.approx(106.0) and sj.embed_peak_mb == 500.0
    assert rows["pca"].gpu_seconds() == C.NA and rows["scvi"].gpu_seconds() == C.NA
    assert rows["scvi"].embed_s_per_1k == pytest.approx(100.0) and rows["scvi"].total_s == 50.0
    assert rows["random"].gpu_seconds() == C.MISSING and math.isnan(rows["random"].embed_s_per_1k)
    cells_pca = C.cost_cells(rows["pca"])
    assert cells_pca[:5] == ["pretrained", "10.0", "9.0", "n/a", "300"]
    assert C.cost_cells(rows["scvi"])[1] == "— (fitted per dataset)"
    assert C.cost_cells(rows["random"])[-1] == "0/1" and C.MISSING in C.cost_cells(rows["random"])


def test_gpus_from_the_log(tmp_path):
    assert C.gpus_used(_log(tmp_path / "a.log", "3"), 1, "auto") == 1
    assert C.gpus_used(_log(tmp_path / "a2.log", "0,1,2,3"), 4, "auto") == 4
    assert C.gpus_used(_log(tmp_path / "b.log", "unset"), 1, "auto") == 0
    assert C.gpus_used(_log(tmp_path / "c.log", "3"), 1, "cpu") == 0  # device forced to the CPU
    assert C.gpus_used(_log(tmp_path / "d.log", "3"), 0, "auto") == 0  # asked for no GPU
    assert C.gpus_used(str(tmp_path / "missing.log"), 1, "auto") is None


def test_cost_rule_lists_every_method_and_control(tmp_path):
    methods, processed = _world(tmp_path)
    scores = []
    for m, v in (("scjepa", 0.8), ("pca", 0.7), ("random", 0.1)):
        p = tmp_path / "scores" / f"{m}.json"
        write_score(score_record("zero_shot", m, "ds_a", {"knn_macro_f1": v}), p)
        scores.append(str(p))
    out = {ext: str(tmp_path / f"table_cost.{ext}") for ext in ("md", "csv", "tex")}
    out.update(png=str(tmp_path / "fig_cost.png"), pdf=str(tmp_path / "fig_cost.pdf"))
    C.cost_rule(Rule(input={"processed": list(processed.values()), "scores": scores}, output=out,
                     params={"methods": methods, "datasets": list(processed)}))
    md, csv = open(out["md"]).read(), open(out["csv"]).read()
    for label in ("scJEPA", "PCA", "scVI", "Random (neg. control)"):
        assert f"| {label} |" in md and f"\n{label}," in csv, label
    assert "| scJEPA | pretrained | 100.0 | 80.0 | 206.0 | 900 | 3.00 | 500 | 106.0 | 2/2 |" in md
    assert open(out["png"], "rb").read(4) == b"\x89PNG" and open(out["pdf"], "rb").read(4) == b"%PDF"
    from PIL import Image

    with Image.open(out["png"]) as im:
        assert im.info["text_overlaps"] == "0"
