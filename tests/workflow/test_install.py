"""The library works installed (not editable): the workflow plans from a copy without src/.

What it guards: a file the library reads at run time (the config schema) must ship inside the package,
not be found through the repository layout. About 6 s (an install without dependencies and a dry run).
"""

import os
import shutil
import subprocess
import sys

from wfhelpers import ROOT, SNAKEMAKE


def _run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-6000:]}"
    return proc.stdout


def test_non_editable_install_plans_the_workflow_without_src(tmp_path):
    # Build from a copy of the project: an in-tree build would leave build/ and egg-info behind in the repo.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
          "--target", str(site), str(project)], cwd=tmp_path, env=env)
    assert (site / "scjepa" / "schemas" / "config.schema.yaml").is_file(), "the schema is not package data"

    # The workflow without the library's sources; the installed copy comes first on the path (before the
    # development checkout, which the editable install of this environment appends at the end).
    work = tmp_path / "workflow_copy"
    work.mkdir()
    for name in ("Snakefile", "workflow", "config", "envs", "profiles"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, work / name)
    assert not (work / "src").exists()
    env["PYTHONPATH"] = str(site)
    where = _run([sys.executable, "-c", "import scjepa.config as c; print(c.__file__); print(c.SCHEMA_PATH)"],
                 cwd=work, env=env).split()
    assert all(p.startswith(str(site)) for p in where), f"the library was not imported from the install: {where}"

    out = _run([SNAKEMAKE, "-n", "--cores", "1"], cwd=work, env=env)
    assert "This was a dry-run" in out and "score_bridge" in out, out[-3000:]
