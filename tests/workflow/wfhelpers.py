"""Fixtures for end-to-end workflow runs on the tiny config."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "workflow" / "tiny.yaml"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake(*args, cwd=None, check=True, snakefile=ROOT / "Snakefile", timeout=1500):
    """Run snakemake in a subprocess; return the CompletedProcess (stdout+stderr in .stdout)."""
    cmd = [SNAKEMAKE, "-s", str(snakefile), *map(str, args)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(map(str, args))} failed:\n{proc.stdout[-6000:]}")
    return proc


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow a test may edit (rule files, config); the library stays installed."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "envs", "profiles", "src"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest
