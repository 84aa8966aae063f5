"""The workflow on a real single-node SLURM cluster, run with the user's command.

    snakemake --cores 2 --profile slurm --configfile <tiny config>

from a copy of the repository (so ``./slurm`` -> ``profiles/slurm`` is resolved exactly as
for a user at the repository root).  The cluster comes from ``conftest.slurm_cluster``: one
node, 2 CPUs, one *fake* GPU (``Gres=gpu:1``, ``File=/dev/null``), no accounting daemon.

Checks
  * every non-local job went through ``sbatch`` and COMPLETED;
  * from the SLURM job records (``scontrol show job``; MinJobAge keeps finished jobs): exactly
    the jobs of the rules that train or fine-tune a neural network asked for a GPU
    (``TresPerJob=gres:gpu:1``), every other job asked for none; CPUs, memory and time limit
    are the rule's threads / mem_mb / runtime;
  * the result tables (``results/tables/**/*.csv``) equal those of a local run
    (``snakemake --cores 2 --configfile <tiny config>``);
  * a deliberately failing job (a sitecustomize on PYTHONPATH makes exactly that job's step exit 1
    inside SLURM) shows up as that job failing, with its SLURM log path (which holds the failure
    message), and a plain rerun of the user's command completes with the same tables.

Targets (parameter ``wf``):
  project  the repository's workflow with ``tests/workflow/tiny.yaml`` (always)
  mini     ``tests/slurm/mini/Snakefile``, a 3-rule workflow for developing this harness
           (only with SCJEPA_SLURM_MINI=1)

Knobs (environment):
  SCJEPA_SLURM_CONFIG     config file for the project run (default tests/workflow/tiny.yaml)
  SCJEPA_SLURM_METHODS    comma list restricting `methods:` of the tiny config (default pca,scjepa;
                          "all" keeps the config's list)
  SCJEPA_SLURM_TARGETS    space-separated targets (default Table 1's CSV; "all" = the whole DAG)
  SCJEPA_SLURM_TIMEOUT_S  limit for one snakemake call (default 900)
  SCJEPA_SLURM_POLL_S     first SLURM status check after N s (default 2; "" = the profile's 10 s)
  SCJEPA_SLURM_SEED_DATA  1 (default): copy the data-stage outputs of the local run into the SLURM
                          run; 0: the SLURM run makes them itself
  SCJEPA_SLURM_REPO       the checkout whose workflow is tested (default: this one)
  SCJEPA_SLURM_KEEP=1     keep the temporary work directories (paths printed)
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

HERE = Path(__file__).resolve().parent
REPO = Path(os.environ.get("SCJEPA_SLURM_REPO", HERE.parents[1])).resolve()  # the workflow to test
VENV_BIN = Path(sys.executable).parent
SNAKEMAKE = str(VENV_BIN / "snakemake") if (VENV_BIN / "snakemake").exists() else shutil.which("snakemake")
CORES = "2"
# The full tiny DAG is ~130 jobs (15+ min as SLURM jobs on 2 CPUs); by default the test builds
# Table 1 for one CPU method (PCA) and one neural method (scJEPA): 15 jobs covering the data
# rules, CPU pretraining, GPU pretraining, GPU fine-tuning, zero-shot scoring and a table.
DEFAULT_METHODS = "pca,scjepa"
DEFAULT_TARGETS = "results/tables/table1_in_distribution.csv"
# One fine-tuning seed: the fine-tuning jobs share the one (fake) GPU and would run one by one.
DEFAULT_OVERLAY = {"tasks": {"finetune": {"seeds": [0]}}}
# Data-stage outputs copied from the local run into the SLURM run before it starts, so that the
# SLURM run does the modelling stage (CPU + GPU rules) within the time budget.  Every SLURM job
# costs ~20-30 s here (two snakemake start-ups + the script's imports on 2 CPUs).
# SCJEPA_SLURM_SEED_DATA=0 runs the data rules on SLURM too (~4 min more).
SEED_PATHS = ["resources", "results/data", "results/gene_space.tsv", "results/store"]
SEED_DATA = os.environ.get("SCJEPA_SLURM_SEED_DATA", "1") == "1"
TIMEOUT_S = int(os.environ.get("SCJEPA_SLURM_TIMEOUT_S", "900"))
# Test speed only: the first status check after a submission (the profile says 10 s and the
# plugin adds 10 s per check while nothing finishes); "" keeps the profile's value.
POLL_S = os.environ.get("SCJEPA_SLURM_POLL_S", "2")
SLURM_ARGS = ["--profile", "slurm"] + (["--slurm-init-seconds-before-status-checks", POLL_S] if POLL_S else [])

# Rules that train or fine-tune a neural network (and only those) must ask for a GPU -- for
# methods of a neural-network family; PCA and Harmony are CPU methods whatever the rule.
# embed_scvi trains scVI's VAE on each dataset, so it is a training rule too.
NN_RULE_RE = re.compile(
    os.environ.get("SCJEPA_SLURM_GPU_RULE_RE", r"(^|_)(pretrain|train|finetune|fine_tune)(_|$)|^embed_scvi$")
)
CPU_FAMILIES = {"pca", "harmony"}

COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "results", "resources", "logs", ".snakemake", "__pycache__", ".pytest_cache",
    "*.egg-info", "out", "tmp",
)

# --------------------------------------------------------------------------------------------
# running snakemake


@dataclass
class Run:
    label: str
    workdir: Path
    cmd: list
    rc: int
    out: str
    seconds: float

    @property
    def run_id(self):
        m = re.search(r"SLURM run ID: (\S+)", self.out)
        return m.group(1) if m else None

    def tail(self, n=120):
        return "\n".join(self.out.splitlines()[-n:])


def _env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SNAKEMAKE_PROFILE"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # jobs inherit it (sbatch --export=ALL)
    env.setdefault("PYTHONHASHSEED", "0")
    env.update(extra or {})
    return env


def run_snakemake(label, workdir, args, targets=(), env_extra=None, timeout=TIMEOUT_S) -> Run:
    cmd = [SNAKEMAKE, "--cores", CORES, *targets, *args]
    log = workdir / f"_{label}.out"
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, env=_env(env_extra),
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = -999
    out = log.read_text()
    run = Run(label, workdir, cmd, rc, out, time.monotonic() - t0)
    if rc == -999 and run.run_id:  # leave no jobs behind
        subprocess.run(["scancel", "--name", run.run_id], capture_output=True)
    print(f"[{label}] rc={rc} {run.seconds:.0f}s: {' '.join(cmd)} (in {workdir})")
    return run


# --------------------------------------------------------------------------------------------
# parsing the snakemake output and the SLURM job records

_BLOCK_START = re.compile(r"^(local)?rule (\S+):\s*$")
_SUBMIT = re.compile(r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+)\)\.\s*$")


@dataclass
class JobBlock:
    rule: str
    local: bool
    jobid: int = -1
    wildcards: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)
    threads: int = 1
    output: str = ""
    log: str = ""


@dataclass
class Submission:
    job: JobBlock
    slurm_id: str
    slurm_log: Path


def _kv_list(text):
    out = {}
    for part in text.split(", "):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def parse_run(out: str):
    """(job blocks in order, SLURM submissions in order) from snakemake's console output."""
    blocks, subs, latest = [], [], {}
    cur = None
    for line in out.splitlines():
        m = _BLOCK_START.match(line)
        if m:
            cur = JobBlock(rule=m.group(2), local=bool(m.group(1)))
            blocks.append(cur)
            continue
        if cur is not None and line.startswith("    "):
            key, _, val = line.strip().partition(": ")
            if key == "jobid":
                cur.jobid = int(val)
                latest[cur.jobid] = cur
            elif key == "wildcards":
                cur.wildcards = _kv_list(val)
            elif key == "resources":
                cur.resources = _kv_list(val)
            elif key == "threads":
                cur.threads = int(val)
            elif key == "output":
                cur.output = val
            elif key == "log":
                cur.log = val
            continue
        cur = None if not line.startswith(" ") else cur
        m = _SUBMIT.match(line)
        if m:
            job = latest[int(m.group(1))]
            subs.append(Submission(job=job, slurm_id=m.group(2), slurm_log=Path(m.group(3))))
    return blocks, subs


_SCONTROL_KV = re.compile(r"(\b[A-Za-z][\w/:]*)=(.*?)(?= [A-Za-z][\w/:]*=|$)")


def slurm_record(slurm_id: str) -> dict:
    proc = subprocess.run(["scontrol", "show", "job", "-o", "-d", slurm_id], capture_output=True, text=True)
    assert proc.returncode == 0, f"no SLURM record for job {slurm_id}: {proc.stderr}"
    return {k: v.strip() for k, v in _SCONTROL_KV.findall(proc.stdout.strip().splitlines()[0])}


def _mem_mb(s: str) -> int:
    m = re.fullmatch(r"([\d.]+)([KMGT]?)", s)
    factor = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024, "": 1}[m.group(2)]
    return int(round(float(m.group(1)) * factor))


def _minutes(s: str) -> int:
    days = 0
    if "-" in s:
        d, s = s.split("-", 1)
        days = int(d)
    parts = [int(p) for p in s.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, mi, sec = parts
    return days * 1440 + h * 60 + mi + math.ceil(sec / 60)


def requests_gpu(rec: dict) -> bool:
    return "gpu" in rec.get("TresPerJob", "") or "gpu" in rec.get("TresPerNode", "") or (
        rec.get("JOB_GRES", "(null)") not in ("(null)", "")
    )


# --------------------------------------------------------------------------------------------
# targets


def _read_yaml(p):
    with open(p) as fh:
        return yaml.safe_load(fh) or {}


@dataclass
class Target:
    name: str
    slurm_dir: Path
    local_dir: Path
    config_args: list
    targets: list
    config: dict
    require_cvd_marker: bool  # rule logs/outputs must show CUDA_VISIBLE_DEVICES

    def expected_gpu(self, job: JobBlock) -> bool:
        if self.name == "mini":
            return job.rule == "train"
        if not NN_RULE_RE.search(job.rule):
            return False
        method = job.wildcards.get("method")
        if method is None:
            return True
        family = (self.config.get("method_params", {}).get(method) or {}).get("family", method)
        return family not in CPU_FAMILIES


def _copy_repo(dest: Path):
    shutil.copytree(REPO, dest, symlinks=True, ignore=COPY_IGNORE)
    assert (dest / "slurm").is_symlink() or (dest / "slurm").is_dir(), "the repository lacks ./slurm -> profiles/slurm"


def _make_target(kind, tmp: Path) -> Target:
    slurm_dir, local_dir = tmp / "slurm_run", tmp / "local_run"
    if kind == "mini":
        for d in (slurm_dir, local_dir):
            d.mkdir(parents=True)
            shutil.copy(HERE / "mini" / "Snakefile", d / "Snakefile")
        (slurm_dir / "slurm").symlink_to(REPO / "profiles" / "slurm")
        return Target("mini", slurm_dir, local_dir, [], [], {}, require_cvd_marker=True)

    cfg_rel = os.environ.get("SCJEPA_SLURM_CONFIG", "tests/workflow/tiny.yaml")
    if not (REPO / "Snakefile").exists() or not (REPO / cfg_rel).exists():
        pytest.fail(f"the project workflow (Snakefile) or its tiny config ({cfg_rel}) is missing", pytrace=False)
    _copy_repo(slurm_dir)
    _copy_repo(local_dir)
    cfg = _read_yaml(REPO / cfg_rel)
    args = ["--configfile", cfg_rel]
    methods = os.environ.get("SCJEPA_SLURM_METHODS", DEFAULT_METHODS)
    overlay = dict(DEFAULT_OVERLAY) if os.environ.get("SCJEPA_SLURM_TARGETS", "") != "all" else {}
    if methods != "all":
        overlay["methods"] = [m.strip() for m in methods.split(",") if m.strip()]
    if overlay:
        for d in (slurm_dir, local_dir):
            (d / "_slurm_test_overlay.yaml").write_text(yaml.safe_dump(overlay))
        args = ["--configfile", cfg_rel, "_slurm_test_overlay.yaml"]
        cfg = {**cfg, **overlay}
    targets = os.environ.get("SCJEPA_SLURM_TARGETS", DEFAULT_TARGETS)
    targets = [] if targets == "all" else targets.split()
    return Target("project", slurm_dir, local_dir, args, targets, cfg, require_cvd_marker=False)


@pytest.fixture(
    scope="module",
    params=[
        "project",
        pytest.param(
            "mini",
            marks=pytest.mark.skipif(
                os.environ.get("SCJEPA_SLURM_MINI") != "1", reason="harness self-test; set SCJEPA_SLURM_MINI=1"
            ),
        ),
    ],
)
def wf(request, slurm_cluster, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"slurm_{request.param}")
    target = _make_target(request.param, tmp)
    yield target
    if os.environ.get("SCJEPA_SLURM_KEEP") == "1":
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_run(wf):
    """The reference: snakemake --cores 2 [--configfile tiny] (local executor)."""
    return run_snakemake("local", wf.local_dir, list(wf.config_args), wf.targets)


@pytest.fixture(scope="module")
def slurm_run(wf, local_run):
    """The user's command: snakemake --cores 2 --profile slurm [--configfile tiny]."""
    if wf.name == "project" and SEED_DATA:
        assert local_run.rc == 0, f"local run failed:\n{local_run.tail()}"
        for rel in SEED_PATHS:
            src, dst = wf.local_dir / rel, wf.slurm_dir / rel
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)  # keeps mtimes
            elif src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    return run_snakemake("slurm", wf.slurm_dir, [*SLURM_ARGS, *wf.config_args], wf.targets)


# --------------------------------------------------------------------------------------------
# result comparison

IGNORED_COLUMNS = re.compile(
    r"^(s|h:m:s|max_rss|max_vms|max_uss|max_pss|io_in|io_out|mean_load|cpu_time|wall_s|elapsed_s|"
    r"runtime_s|seconds|duration_s|.*_seconds|.*_time_s|host|hostname)$",
    re.IGNORECASE,
)


def tables(root: Path):
    base = root / "results" / "tables"
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*.csv")) if base.exists() else []


def assert_tables_equal(a_root: Path, b_root: Path):
    import numpy as np
    import pandas as pd

    ta, tb = tables(a_root), tables(b_root)
    assert ta, f"no result tables under {a_root}/results/tables"
    assert ta == tb, f"different table sets:\nslurm: {ta}\nlocal: {tb}"
    for rel in ta:
        a = pd.read_csv(a_root / "results/tables" / rel)
        b = pd.read_csv(b_root / "results/tables" / rel)
        assert list(a.columns) == list(b.columns), f"{rel}: columns differ"
        assert a.shape == b.shape, f"{rel}: shape {a.shape} vs {b.shape}"
        for col in a.columns:
            if IGNORED_COLUMNS.match(str(col)):
                continue
            x, y = a[col], b[col]
            if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
                ok = np.isclose(x.to_numpy(float), y.to_numpy(float), rtol=1e-5, atol=1e-8, equal_nan=True)
                assert ok.all(), f"{rel}: column {col!r} differs:\n{pd.DataFrame({'slurm': x, 'local': y})[~ok]}"
            else:
                assert x.astype(str).tolist() == y.astype(str).tolist(), f"{rel}: column {col!r} differs"


# --------------------------------------------------------------------------------------------
# failure injection: a sitecustomize that makes exactly one job's step fail inside SLURM

SITECUSTOMIZE = r'''
import os, sys
_want = os.environ.get("SCJEPA_TEST_FAIL_JOB")
if _want and os.environ.get("SLURM_JOB_ID") and os.environ.get("SLURM_STEP_ID") and "--target-jobs" in sys.argv:
    def _parse(s):
        rule, _, wc = s.partition(":")
        return rule, dict(kv.split("=", 1) for kv in wc.split(",") if "=" in kv)
    _i = sys.argv.index("--target-jobs")
    if _i + 1 < len(sys.argv) and _parse(sys.argv[_i + 1]) == _parse(_want):
        sys.stderr.write(f"deliberate failure injected into job {_want} (SCJEPA_TEST_FAIL_JOB)\n")
        sys.stderr.flush()
        os._exit(1)
'''


def _target_jobs_str(job: JobBlock) -> str:
    return f"{job.rule}:" + ",".join(f"{k}={v}" for k, v in job.wildcards.items())


# ============================================================================================
# tests (module order matters: the failure test reuses and then repairs the SLURM run)


def test_user_command_runs_every_job_on_slurm(wf, slurm_run):
    assert slurm_run.rc == 0, f"`snakemake --cores 2 --profile slurm` failed:\n{slurm_run.tail()}"
    assert re.search(r"Using profiles? slurm\b", slurm_run.out), "profile 'slurm' was not picked up from ./slurm"
    blocks, subs = parse_run(slurm_run.out)
    remote = [b for b in blocks if not b.local]
    assert remote, "no job was submitted to SLURM"
    assert {b.jobid for b in remote} == {s.job.jobid for s in subs}, "some non-local jobs were not sbatch-submitted"
    states = {s.slurm_id: slurm_record(s.slurm_id) for s in subs}
    bad = {i: (r.get("JobState"), r.get("Comment")) for i, r in states.items() if r.get("JobState") != "COMPLETED"}
    assert not bad, f"SLURM jobs not COMPLETED: {bad}"
    assert {r.get("JobName") for r in states.values()} == {slurm_run.run_id}
    print(f"{len(subs)} SLURM jobs, {len(blocks) - len(remote)} local jobs, {slurm_run.seconds:.0f}s")


def test_exactly_the_nn_training_jobs_get_a_gpu(wf, slurm_run, slurm_cluster):
    assert slurm_run.rc == 0
    _, subs = parse_run(slurm_run.out)
    rows, wrong = [], []
    for s in subs:
        rec = slurm_record(s.slurm_id)
        assert rec.get("Comment", "").startswith(f"rule_{s.job.rule}"), (s.slurm_id, rec.get("Comment"))
        declared = int(float(s.job.resources.get("gpu", 0) or 0)) > 0
        asked = requests_gpu(rec)
        expected = wf.expected_gpu(s.job)
        rows.append(f"{s.slurm_id:>5} {s.job.rule:<28} {s.job.wildcards} gpu declared={declared} "
                    f"requested={asked} expected={expected} TresPerJob={rec.get('TresPerJob', '-')}")
        if not (declared == asked == expected):
            wrong.append(rows[-1])
    print("\n".join(rows))
    assert not wrong, "GPU requests do not match (NN training/fine-tuning <=> GPU):\n" + "\n".join(wrong)
    assert any(wf.expected_gpu(s.job) for s in subs), "the run had no GPU job: the test proves nothing"
    assert any(not wf.expected_gpu(s.job) for s in subs), "the run had no CPU job"

    # inside the jobs: SLURM bound the (fake) GPU -> CUDA_VISIBLE_DEVICES set only in GPU jobs
    seen = 0
    for s in subs:
        texts = []
        for p in (s.job.log.split(", ") if s.job.log else []) + (s.job.output.split(", ") if s.job.output else []):
            f = wf.slurm_dir / p
            if f.is_file() and f.stat().st_size < 1_000_000:
                texts.append(f.read_text(errors="replace"))
        m = re.search(r"CUDA_VISIBLE_DEVICES=(\S*)", "\n".join(texts))
        if not m:
            continue
        seen += 1
        has = m.group(1) not in ("", "unset", "None", "NoDevFiles")
        assert has == wf.expected_gpu(s.job), f"job {s.slurm_id} ({s.job.rule}): CUDA_VISIBLE_DEVICES={m.group(1)}"
    if wf.require_cvd_marker:
        assert seen >= 2, "no job recorded CUDA_VISIBLE_DEVICES"


def test_threads_mem_runtime_reach_sbatch(wf, slurm_run, slurm_cluster):
    assert slurm_run.rc == 0
    _, subs = parse_run(slurm_run.out)
    wrong = []
    for s in subs:
        rec = slurm_record(s.slurm_id)
        res = s.job.resources
        for what, declared, got in (
            ("mem_mb", res.get("mem_mb"), _mem_mb(rec.get("MinMemoryNode", "0"))),
            ("runtime", res.get("runtime"), _minutes(rec.get("TimeLimit", "0"))),
            ("threads", s.job.threads, int(rec.get("NumCPUs", 0))),
        ):
            if declared is None:
                wrong.append(f"{s.job.rule}: declares no {what}")
            elif int(float(declared)) != got:
                wrong.append(f"{s.job.rule} (SLURM {s.slurm_id}): {what} declared {declared}, SLURM has {got}")
    assert not wrong, "\n".join(wrong)


def test_result_tables_equal_a_local_run(wf, slurm_run, local_run):
    assert slurm_run.rc == 0
    assert local_run.rc == 0, f"local run failed:\n{local_run.tail()}"
    assert_tables_equal(wf.slurm_dir, wf.local_dir)
    print(f"SLURM run {slurm_run.seconds:.0f}s, local run {local_run.seconds:.0f}s, tables: {tables(wf.slurm_dir)}")


def test_failed_job_is_reported_with_its_log_and_rerun_completes(wf, slurm_run, local_run, tmp_path):
    assert slurm_run.rc == 0
    _, subs = parse_run(slurm_run.out)
    victim = subs[-1].job  # the last SLURM job: cheapest to redo (few or no downstream jobs)
    target_file = victim.output.split(", ")[0]
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {
        "SCJEPA_TEST_FAIL_JOB": _target_jobs_str(victim),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(inject), os.environ.get("PYTHONPATH")])),
    }
    # --retries 0: the profile's retry would only repeat the same failure (and cost ~40 s here)
    fail = run_snakemake("fail", wf.slurm_dir,
                         [*SLURM_ARGS, *wf.config_args, "--retries", "0", "--forcerun", target_file],
                         wf.targets, env_extra=env)
    assert fail.rc not in (0, -999), f"the injected failure did not fail the run (rc={fail.rc}):\n{fail.tail()}"
    _, fsubs = parse_run(fail.out)
    failed = [s for s in fsubs if s.job.rule == victim.rule and s.job.wildcards == victim.wildcards]
    assert failed, f"job {_target_jobs_str(victim)} was not submitted:\n{fail.tail()}"
    for s in failed:
        rec = slurm_record(s.slurm_id)
        assert rec["JobState"] == "FAILED", (s.slurm_id, rec["JobState"])
        # snakemake names the job, the SLURM job and its log
        assert re.search(rf"Error in rule {re.escape(victim.rule)}:", fail.out)
        assert f"SLURM-job '{s.slurm_id}' failed" in fail.out
        log_line = [ln for ln in fail.out.splitlines() if ln.strip().startswith("log:") and str(s.slurm_log) in ln]
        assert log_line, f"the SLURM log path {s.slurm_log} is not reported:\n{fail.tail()}"
        log = s.slurm_log if s.slurm_log.is_absolute() else wf.slurm_dir / s.slurm_log
        assert log.is_file(), f"reported log {log} does not exist"
        assert "deliberate failure injected" in log.read_text(errors="replace")
    others = [s for s in fsubs if s not in failed]
    assert all(slurm_record(s.slurm_id)["JobState"] == "COMPLETED" for s in others), "another job failed too"

    rerun = run_snakemake("rerun", wf.slurm_dir, [*SLURM_ARGS, *wf.config_args], wf.targets)
    assert rerun.rc == 0, f"rerun after the failure did not complete:\n{rerun.tail()}"
    _, rsubs = parse_run(rerun.out)
    assert any(s.job.rule == victim.rule and s.job.wildcards == victim.wildcards for s in rsubs), \
        "the rerun did not redo the failed job"
    assert all(slurm_record(s.slurm_id)["JobState"] == "COMPLETED" for s in rsubs)
    assert_tables_equal(wf.slurm_dir, wf.local_dir)
    print(f"failure run {fail.seconds:.0f}s (job {_target_jobs_str(victim)}, SLURM ids "
          f"{[s.slurm_id for s in failed]}), rerun {rerun.seconds:.0f}s")
