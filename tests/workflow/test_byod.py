"""The README's bring-your-own-data example, run exactly as written (the lines between its markers)."""

import re
import subprocess
import time

import pandas as pd
import pytest
import yaml

from wfhelpers import ROOT, copy_workflow, snakemake

pytestmark = pytest.mark.slow


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- byod-example -->\s*```bash\n(.*?)```\s*<!-- /byod-example -->", text, re.S)
    assert block, "README.md lost its bring-your-own-data example"
    return block.group(1)


def test_readme_byod_example_runs_as_written(tmp_path):
    repo = copy_workflow(tmp_path / "clone")
    (repo / ".venv").symlink_to(ROOT / ".venv")  # what `make setup` leaves in a clone
    script = readme_example()
    start = time.time()
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=repo, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-6000:]
    print(f"bring-your-own-data example: {time.time() - start:.0f} s")
    table = repo / "runs" / "my_cells" / "results" / "tables" / "table1_in_distribution.csv"
    df = pd.read_csv(table)
    assert set(df.iloc[:, 0]) == {"pca", "scjepa", "supervised"}  # the rows are the config's methods
    md = (repo / "runs" / "my_cells" / "results" / "tables" / "table1_in_distribution.md").read_text()
    assert md in proc.stdout  # the example's last line shows the table
    scjepa_row = next(line for line in md.splitlines() if line.startswith("| scjepa |"))  # no label set: its name
    assert "failed" not in scjepa_row and re.search(r"0\.\d{3}", scjepa_row)
    # only the user's dataset ran: no demo data in this working directory
    assert {p.name for p in (repo / "runs" / "my_cells" / "results" / "data").iterdir()} == {"my_cells"}


def test_demo_models_score_a_users_file_when_the_demo_config_is_named_first(tmp_path):
    mine = {"datasets": {"my_cells": {"source": "synthetic", "roles": ["in_distribution"],
                                      "synthetic": {"kind": "in_distribution", "n_cells": 500, "n_genes": 2000,
                                                    "seed": 11},
                                      "columns": {"cell_type": "cell_type", "donor": "donor"}}}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(mine))
    demo = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    out = snakemake("-n", "--configfile", "config/config.yaml", tmp_path / "mine.yaml", "--quiet", "rules",
                    cwd=ROOT, check=False)
    assert out.returncode == 0, out.stdout[-3000:]
    out = snakemake("-n", "--configfile", "config/config.yaml", tmp_path / "mine.yaml", cwd=ROOT).stdout
    assert "results/scores/zero_shot/scjepa/my_cells.json" in out or "Nothing to be done" in out
    for d in demo["datasets"]:
        assert f"results/data/{d}/processed.h5ad" in out or "Nothing to be done" in out
