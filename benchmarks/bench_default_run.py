"""Wall time of the default benchmark end to end, and where the job time goes (issue 7: <= 15 min on 2 cores).

Runs the default workflow from an empty working directory (cold caches, as a first ``make run``)::

    .venv/bin/snakemake -s Snakefile -d WORKDIR --configfile config/config.yaml --cores CORES

then sums the rules' ``benchmark:`` files (wall and CPU seconds per rule), counts the jobs and hashes
every table, so two runs can be checked for identical results.

    python benchmarks/bench_default_run.py [--cores 2] [--workdir /tmp/scjepa_default_run] [--label NAME]
    python benchmarks/bench_default_run.py --summarise WORKDIR [--wall SECONDS] --label NAME

``--summarise`` records a run made by hand in WORKDIR: its start, end and job count come from the
run's own Snakemake log (``log_span_s``: from the log's start to its last job's end, which leaves out
Snakemake's start-up before the log opens); ``--wall`` adds the wall time the caller measured around the
command. Writes ``benchmarks/results/default_run_<label>.json`` and prints a one-line summary.
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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DONE = re.compile(r"(\d+) of (\d+) steps \(100%\) done")
LOG_START = re.compile(r"^\s*Date: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", re.M)
LOG_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]", re.M)


def log_span(log_text: str) -> tuple[str | None, float | None]:
    """(start date, seconds from the log's start to its last timestamp) of a Snakemake log."""
    start, stamps = LOG_START.search(log_text), LOG_STAMP.findall(log_text)
    if not start or not stamps:
        return None, None
    t0 = datetime.strptime(start.group(1), "%Y-%m-%d %H:%M:%S")
    t1 = datetime.strptime(" ".join(stamps[-1].split()), "%a %b %d %H:%M:%S %Y")
    return t0.strftime("%Y-%m-%d"), (t1 - t0).total_seconds()


def summarise(workdir: Path, wall: float | None, log_text: str | None) -> dict:
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
    jobs = date = span = None
    if log_text:
        m = DONE.findall(log_text)
        jobs = int(m[-1][1]) if m else None
        date, span = log_span(log_text)
    return {
        "wall_s": None if wall is None else round(wall, 1),
        "log_span_s": span,
        "jobs": jobs,
        "per_rule": {k: {kk: round(vv, 1) for kk, vv in v.items()} for k, v in sorted(per_rule.items())},
        "tables_sha256_16": tables,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_end": os.getloadavg()},
        "date": date or time.strftime("%Y-%m-%d"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/scjepa_default_run"))
    ap.add_argument("--label", default="latest")
    ap.add_argument("--summarise", type=Path, help="summarise an existing run's working directory")
    ap.add_argument("--wall", type=float, help="with --summarise: the wall seconds measured around the command")
    args = ap.parse_args(argv)

    if args.summarise:
        logs = sorted((args.summarise / ".snakemake" / "log").glob("*.snakemake.log"))  # the last run's
        if not logs:
            ap.error(f"{args.summarise} has no .snakemake/log/*.snakemake.log to summarise")
        result = summarise(args.summarise, args.wall, logs[-1].read_text())
        result["machine"]["loadavg_at_end"] = None  # not known after the fact
        result["command"] = f"(run by hand in {args.summarise}; see its log {logs[-1].name})"
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
        logs = sorted((args.workdir / ".snakemake" / "log").glob("*.snakemake.log"))
        result = summarise(args.workdir, wall, logs[-1].read_text() if logs else proc.stdout)
        result["command"] = " ".join(cmd)
    dest = ROOT / "benchmarks" / "results" / f"default_run_{args.label}.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    rules = ", ".join(f"{k} {v['jobs']}x {v['wall_s']:.0f}s" for k, v in result["per_rule"].items())
    minutes = ", ".join(f"{k} {result[k] / 60:.1f} min" for k in ("wall_s", "log_span_s") if result[k] is not None)
    print(f"default run: {minutes}, {result['jobs']} jobs; {rules}; -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
