"""Predicted cluster cost of the whole paper run (config/paper.yaml), per rule, from the evaluation cost model.

Every (method, dataset) job of the evaluation rules that the config plans (the task registry's roles and
each method's ``serves``, as workflow/rules/common.smk enumerates them) is costed with
:mod:`scjepa.eval_costs` (fitted to benchmarks/bench_eval_scale.py) at the paper datasets' published cell
counts (``SIZES`` below; config/README.md, 'The paper's data'). The data and pretraining rules are costed
from the rates measured in benchmarks/RESULTS.md (named at each row). Assumptions are printed with the
table and written to benchmarks/results/paper_cost.json.

    python benchmarks/predict_paper_cost.py [--config config/paper.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from scjepa import eval_costs as ec  # noqa: E402
from scjepa import task_registry  # noqa: E402
from scjepa.config import method_entry, validate  # noqa: E402
from scjepa.tasks.finetune_store import streams  # noqa: E402

#: cells of each paper dataset (config/README.md's table; scTab's split: 15.24M / 3.5M / 3.45M)
SIZES = {
    "sctab": {"n_obs": 22_189_056, "splits": {"train": 15_240_192, "val": 3_500_032, "test": 3_448_832}},
    "hlca": {"n_obs": 775_790},
    "pbmc": {"n_obs": 335_861},
    "tabula_sapiens": {"n_obs": 301_871},
    "brain_hit": {"n_obs": 56_367},
    "brain_non_neuronal": {"n_obs": 888_263},
    "circulating_immune": {"n_obs": 195_632},
    "cortical_development": {"n_obs": 709_372},
    "great_apes": {"n_obs": 156_285},
    "human_neocortex": {"n_obs": 232_328},
    "human_breast_cancer": {"n_obs": 30_000, "assumed": "~30k cells (10x's Chromium FFPE sample; not in the README)"},
    "lung_integration": {"n_obs": 228_475},
    "merscope_neocortex": {"n_obs": 200_000, "assumed": "one MERSCOPE section, 200k cells assumed (not in the README)"},
    # bridge datasets (their scoring subsamples each snapshot, so only the data rules depend on these)
    "eb_timecourse": {"n_obs": 17_000, "assumed": "Moon 2019 EB, ~17k cells after QC"},
    "larry_hematopoiesis": {"n_obs": 131_000, "assumed": "Weinreb 2020 in vitro, ~131k cells"},
    "sciplex3": {"n_obs": 650_000, "assumed": "Srivatsan 2020 sci-Plex 3, ~650k cells"},
}
NNZ_PER_CELL = 2_000  # scTab-shaped (benchmarks/RESULTS.md, bench_loader.py's store: mean 2,000 of 19,331 genes)
N_GENES = 19_331
CLASSES = {"sctab": 164}  # the probe's classes; others: 30 (Table 2/3 sets have 6-29 types)

#: rates from benchmarks/RESULTS.md for the rules this model does not fit
PREPROCESS_CELLS_PER_S = 6_924  # 'Data layer': preprocess, 1M x 19,331, 1 process
STORE_CELLS_PER_S = 16_854  # 'Data layer': build store, 1M x 19,331
PRETRAIN_GPU_CELLS_PER_S = 419_000  # 'CSR loader': one H100 at 40 % of dense bf16 peak, scJEPA at the paper's settings


def shape_of(name: str, splits_fractions) -> ec.Shape:
    s = SIZES[name]
    splits = s.get("splits") or {k: int(round(f * s["n_obs"])) for k, f in zip(("train", "val", "test"), splits_fractions)}
    return ec.Shape(n_obs=s["n_obs"], n_vars=N_GENES, nnz=s["n_obs"] * NNZ_PER_CELL, splits=splits)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "paper.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "paper_cost.json"))
    args = ap.parse_args(argv)
    raw = yaml.safe_load(Path(args.config).read_text())
    cfg = validate(raw)
    datasets, methods = cfg["datasets"], list(cfg["methods"])
    fractions = cfg["preprocess"]["split_fractions"]

    def serving(task):
        return [m for m in methods if task in method_entry(cfg, m)["serves"]]

    def eval_sets(task):
        roles = task_registry.get(task).roles
        return sorted(d for d, e in datasets.items() if any(r in e["roles"] for r in roles))

    rows: dict = defaultdict(lambda: {"jobs": 0, "cpu_h": 0.0, "gpu_h": 0.0, "max_mem_gb": 0.0, "max_runtime_h": 0.0,
                                      "largest": ""})

    def add(rule, cost: ec.Cost, what: str, floor=None, task=None, asked: ec.Cost | None = None):
        """``asked``: the cost the rule's resources are computed from, where it differs (the probe's worst case)."""
        r = rows[rule]
        r["jobs"] += 1
        r["cpu_h"] += cost.cpu_s / 3600
        r["gpu_h"] += cost.gpu_s / 3600
        if cost.mem_mb / 1024 > r["max_mem_gb"]:
            r["max_mem_gb"], r["largest"] = cost.mem_mb / 1024, what
        if task:
            res = ec.job_resources(task, asked or cost, 1, floor)
            r["max_runtime_h"] = max(r["max_runtime_h"], res["runtime"] / 60)

    zs, ti, ft = cfg["tasks"]["zero_shot"], cfg["tasks"]["integration"], cfg["tasks"]["finetune"]
    seeds = len(ft["seeds"])
    for m in serving("zero_shot"):
        for d in eval_sets("zero_shot"):
            s = shape_of(d, fractions)
            c = ec.zero_shot_cost(s, probe=zs["linear_probe"], n_classes=CLASSES.get(d, 30),
                                  probe_iterations=ec.PROBE_TYPICAL_ITER)
            add("score_zero_shot", c, f"{m}/{d}", task="zero_shot",
                asked=ec.zero_shot_cost(s, probe=zs["linear_probe"], n_classes=CLASSES.get(d, 30)))
    for m in serving("finetune"):
        gpu = int(method_entry(cfg, m)["gpu"]) > 0
        for d in eval_sets("finetune"):
            # the corpus through its store (tasks.finetune.stream; scjepa.tasks.finetune_store): bounded memory
            c = ec.finetune_cost(shape_of(d, fractions), epochs=ft["max_epochs"], seeds=seeds, gpu=gpu,
                                 streaming=streams(d, cfg["corpus"], ft.get("stream", "corpus")),
                                 batch_size=ft.get("batch_size", 256), shard_size=cfg["store"]["shard_size"],
                                 buffer_shards=cfg["store"]["buffer_shards"],
                                 hierarchy=bool(zs.get("hierarchy", {}).get("enabled")))
            add("score_finetune", c, f"{m}/{d}", floor=(8000, 120 * seeds), task="finetune")
    for m in serving("integration"):
        for d in eval_sets("integration"):
            c = ec.integration_cost(shape_of(d, fractions), runs=ti["runs"], subsample=ti["subsample"],
                                    max_cells=ti.get("max_cells", 50_000))
            add("score_integration", c, f"{m}/{d}", task="integration")
    for m in serving("spatial"):
        for d in eval_sets("spatial"):
            ref = datasets[d].get("reference")
            args_ = (shape_of(d, fractions), shape_of(ref, fractions) if ref else None)
            c = ec.spatial_cost(*args_, probe=zs["linear_probe"], n_classes=30, probe_iterations=ec.PROBE_TYPICAL_ITER)
            add("score_spatial", c, f"{m}/{d}", task="spatial",
                asked=ec.spatial_cost(*args_, probe=zs["linear_probe"], n_classes=30))

    for task in ("bridge",):  # subsampled to tasks.bridge.max_cells_per_time: not a function of the dataset size
        for m in serving(task):
            for d in eval_sets(task):
                rows["score_bridge (not modelled)"]["jobs"] += 1
    # data and pretraining, from RESULTS' measured rates (one job per dataset / method)
    for d in datasets:
        n = SIZES[d]["n_obs"]
        add("preprocess", ec.Cost(cpu_s=n / PREPROCESS_CELLS_PER_S, mem_mb=1300), d)
    corpus = cfg["corpus"]
    add("build_store", ec.Cost(cpu_s=SIZES[corpus]["n_obs"] / STORE_CELLS_PER_S, mem_mb=700), corpus)
    n_train = SIZES[corpus]["splits"]["train"]
    for m in methods:
        fam = method_entry(cfg, m)["family"]
        if fam in ("scjepa", "mae", "barlow_twins", "supervised"):
            gpu_s = cfg["training"]["max_epochs"] * n_train / PRETRAIN_GPU_CELLS_PER_S
            add(f"pretrain_{fam}", ec.Cost(cpu_s=0.0, mem_mb=0.0, gpu_s=gpu_s), m)

    by_dataset: dict = defaultdict(float)
    for m in serving("zero_shot"):
        for d in eval_sets("zero_shot"):
            by_dataset[d] += ec.zero_shot_cost(shape_of(d, fractions), probe=zs["linear_probe"],
                                               n_classes=CLASSES.get(d, 30),
                                               probe_iterations=ec.PROBE_TYPICAL_ITER).cpu_s / 3600
    total = {"jobs": sum(r["jobs"] for r in rows.values()), "cpu_h": sum(r["cpu_h"] for r in rows.values()),
             "gpu_h": sum(r["gpu_h"] for r in rows.values())}
    report = {"config": str(Path(args.config).relative_to(ROOT)) if Path(args.config).is_absolute() else args.config,
              "sizes": SIZES, "zero_shot_cpu_h_by_dataset": dict(by_dataset), "nnz_per_cell": NNZ_PER_CELL, "rows": dict(rows), "total": total,
              "assumptions": {
                  "probe_iterations": f"{ec.PROBE_TYPICAL_ITER} (CPU-hours); resources allow {ec.PROBE_MAX_ITER}",
                  "finetune_gpu_epoch_s_per_cell": ec.FINETUNE_EPOCH_S_PER_CELL_GPU,
                  "pretrain_gpu_cells_per_s": PRETRAIN_GPU_CELLS_PER_S}}
    Path(args.out).write_text(json.dumps(report, indent=1, sort_keys=True))
    print("| rule | jobs | CPU-hours | GPU-hours | largest job's memory | longest job's runtime resource |")
    print("|---|---:|---:|---:|---:|---:|")
    for rule, r in sorted(rows.items(), key=lambda kv: -(kv[1]["cpu_h"] + kv[1]["gpu_h"])):
        mem = f"{r['max_mem_gb']:,.1f} GB ({r['largest']})" if r["max_mem_gb"] else "—"
        rt = f"{r['max_runtime_h']:,.1f} h" if r["max_runtime_h"] else "—"
        print(f"| `{rule}` | {r['jobs']} | {r['cpu_h']:,.1f} | {r['gpu_h']:,.2f} | {mem} | {rt} |")
    print("zero-shot CPU-hours by dataset: " + ", ".join(f"{d} {h:,.1f}" for d, h in sorted(by_dataset.items(), key=lambda kv: -kv[1])))
    print(f"| **total** | {total['jobs']} | **{total['cpu_h']:,.0f}** | **{total['gpu_h']:,.1f}** | | |")
    return report


if __name__ == "__main__":
    main()
