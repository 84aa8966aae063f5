"""Wall time of the default benchmark end to end, and where the job time goes (issue 7: <= 15 min on 2 cores).

Runs the default workflow from an empty working directory (cold caches, as a first ``make run``)::

    .venv/bin/snakemake -s Snakefile -d WORKDIR --configfile config/config.yaml --cores CORES

then sums the rules' ``benchmark:`` files (wall and CPU seconds per rule), counts the jobs and hashes
every table, so two runs can be checked for identical results.

    python benchmarks/bench_default_run.py [--cores 2] [--workdir /tmp/scjepa_default_run] [--label NAME]
    python benchmarks/bench_default_run.py --summarise WORKDIR --wall SECONDS --label NAME

``--summarise`` records a run made by hand (the same command, timed by the caller). Writes
``benchmarks/results/default_run_<label>.json`` and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DONE = re.compile(r"(\d+) of (\d+) steps \(100%\) done")


def summarise(workdir: Path, wall: float, log_text: str | None) -> dict:
    per_rule: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0})
    for tsv in sorted((workdir / "results" / "benchmarks").rglob("*.tsv")):
        rule = tsv.relative_to(workdir / "results" / "benchmarks").parts[0]
        with tsv.open() as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        r = per_rule[rule]
        r["jobs"] += 1
        r["wall_s"] += float(row["s"])
        r["cpu_s"] += float(row.get("cpu_time") or 0.0)
    tables = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
              for p in sorted((workdir / "results" / "tables").glob("*.csv"))}
    jobs = None
    if log_text:
        m = DONE.findall(log_text)
        jobs = int(m[-1][1]) if m else None
    return {
        "wall_s": round(wall, 1),
        "jobs": jobs,
        "per_rule": {k: {kk: round(vv, 1) for kk, vv in v.items()} for k, v in sorted(per_rule.items())},
        "tables_sha256_16": tables,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_end": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/scjepa_default_run"))
    ap.add_argument("--label", default="latest")
    ap.add_argument("--summarise", type=Path, help="summarise an existing run's working directory")
    ap.add_argument("--wall", type=float, help="with --summarise: the run's measured wall seconds")
    args = ap.parse_args(argv)

    if args.summarise:
        if args.wall is None:
            ap.error("--summarise needs --wall")
        logs = sorted((args.summarise / ".snakemake" / "log").glob("*.snakemake.log"))  # the last run's
        result = summarise(args.summarise, args.wall, logs[-1].read_text() if logs else None)
        result["machine"]["loadavg_at_end"] = None  # not known after the fact
        result["command"] = "(run by hand) snakemake -s Snakefile -d WORKDIR --configfile config/config.yaml --cores 2"
    else:
        if args.workdir.exists():
            shutil.rmtree(args.workdir)
        snakemake = str(Path(sys.executable).with_name("snakemake"))
        cmd = [snakemake, "-s", str(ROOT / "Snakefile"), "-d", str(args.workdir),
               "--configfile", str(ROOT / "config" / "config.yaml"), "--cores", str(args.cores)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-5000:])
            return proc.returncode
        result = summarise(args.workdir, wall, proc.stdout)
        result["command"] = " ".join(cmd)
    dest = ROOT / "benchmarks" / "results" / f"default_run_{args.label}.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    rules = ", ".join(f"{k} {v['jobs']}x {v['wall_s']:.0f}s" for k, v in result["per_rule"].items())
    print(f"default run: {result['wall_s'] / 60:.1f} min, {result['jobs']} jobs; {rules}; -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
