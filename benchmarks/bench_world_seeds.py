"""Are the default run's rankings a property of the methods or of one embedded world? Rerun it on other worlds.

Issue 16: run the default benchmark with several world seeds (``datasets.*.synthetic.world_seed``: the genes,
programs, lineage and batch effects of the embedded world; each dataset's own cell seed is kept) and report each
method's rank per task family (the summary table's "<family> / rank" columns) on every world, its mean rank and
its spread, and which conclusions held on every world.

    python benchmarks/bench_world_seeds.py [--seeds 0 1 2] [--cores 2] [--root /tmp/scjepa_worlds]
        [--configfile config/config.yaml] [--label default]
    python benchmarks/bench_world_seeds.py --collect --root DIR --seeds 0 1 2   # summarise finished runs

Each world runs in ``ROOT/world_<seed>`` (an existing finished run is reused: Snakemake has nothing to do). The
override is a second ``--configfile`` setting ``world_seed`` in every synthetic dataset. Writes
``benchmarks/results/world_seeds_<label>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def override_for(config: dict, seed: int) -> dict:
    """The second config file of one world: world_seed in every synthetic dataset, nothing else."""
    return {"datasets": {name: {"synthetic": {"world_seed": int(seed)}}
                         for name, ds in config["datasets"].items() if ds.get("source") == "synthetic"}}


def family_ranks(summary_csv: Path) -> dict[str, dict[str, int | None]]:
    """method label -> {family: rank} from a summary table (controls, shown as '—', are left out)."""
    out: dict[str, dict[str, int | None]] = {}
    with summary_csv.open() as f:
        for row in csv.DictReader(f):
            ranks = {}
            for col, val in row.items():
                if col.endswith(" / rank"):
                    fam = col[: -len(" / rank")]
                    ranks[fam] = int(val) if val.strip().isdigit() else None
            if any(v is not None for v in ranks.values()):
                out[row["method"]] = ranks
    return out


def collate(per_world: dict[int, dict[str, dict[str, int | None]]]) -> dict:
    """Per method and family: the rank on each world, mean, sd and range; 'stable' when every world agrees."""
    methods = sorted({m for ranks in per_world.values() for m in ranks})
    families = sorted({f for ranks in per_world.values() for r in ranks.values() for f in r})
    table = {}
    for m in methods:
        table[m] = {}
        for fam in families:
            vals = [per_world[s].get(m, {}).get(fam) for s in sorted(per_world)]
            got = [v for v in vals if v is not None]
            if not got:
                continue
            table[m][fam] = {"ranks": vals, "mean": statistics.fmean(got),
                             "sd": statistics.stdev(got) if len(got) > 1 else 0.0,
                             "range": [min(got), max(got)], "stable": len(set(got)) == 1 and len(got) == len(vals)}
    winners = {}
    for fam in families:
        firsts = [next((m for m in methods if per_world[s].get(m, {}).get(fam) == 1), None) for s in sorted(per_world)]
        winners[fam] = {"rank_1_per_world": firsts, "same_winner_on_every_world": len(set(firsts)) == 1}
    return {"methods": table, "winners": winners}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--root", type=Path, default=Path("/tmp/scjepa_worlds"))
    ap.add_argument("--configfile", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--label", default="default")
    ap.add_argument("--collect", action="store_true", help="only summarise the finished runs under --root")
    args = ap.parse_args(argv)
    config = yaml.safe_load(args.configfile.read_text())
    walls = {}
    for seed in args.seeds:
        work = args.root / f"world_{seed}"
        if not args.collect:
            work.mkdir(parents=True, exist_ok=True)
            over = work / f"world_seed_{seed}.yaml"
            over.write_text(yaml.safe_dump(override_for(config, seed)))
            cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"), "-d", str(work),
                   "--cores", str(args.cores), "--configfile", str(args.configfile), str(over)]
            t0 = time.time()
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            walls[seed] = round(time.time() - t0, 1)
            (work / "bench_world_seeds.log").write_text(proc.stdout)
            if proc.returncode != 0:
                raise SystemExit(f"world {seed} failed; see {work / 'bench_world_seeds.log'}")
    per_world = {s: family_ranks(args.root / f"world_{s}" / "results" / "tables" / "table_summary.csv")
                 for s in args.seeds}
    result = {"seeds": args.seeds, "configfile": str(args.configfile), "wall_s": walls, **collate(per_world)}
    out = ROOT / "benchmarks" / "results" / f"world_seeds_{args.label}.json"
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    fams = sorted({f for m in result["methods"].values() for f in m})
    print("| method | " + " | ".join(f"{f}: ranks (mean ± sd)" for f in fams) + " |")
    print("|---|" + "---|" * len(fams))
    for m, per in result["methods"].items():
        cells = []
        for f in fams:
            r = per.get(f)
            cells.append("n/a" if r is None else
                         f"{'/'.join('-' if v is None else str(v) for v in r['ranks'])} ({r['mean']:.2f} ± {r['sd']:.2f})")
        print(f"| {m} | " + " | ".join(cells) + " |")
    for f, w in result["winners"].items():
        print(f"{f}: rank 1 per world {w['rank_1_per_world']}; same winner on every world: {w['same_winner_on_every_world']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
