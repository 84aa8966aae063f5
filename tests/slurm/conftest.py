"""Fixtures for the SLURM tests: a real single-node SLURM cluster on this host.

The session fixture ``slurm_cluster`` runs ``tests/slurm/setup_slurm.sh`` (apt-get installs
slurm-wlm + munge when missing, writes the cluster config, starts munged/slurmctld/slurmd) and
``tests/slurm/teardown_slurm.sh`` at the end, which stops only the daemons the setup started.

The tests skip -- with the reason -- only where SLURM cannot be installed (not root, no
apt-get, packages unavailable) or when ``SCJEPA_SKIP_SLURM=1``; a cluster that installs but does
not come up is a test failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SETUP = HERE / "setup_slurm.sh"
TEARDOWN = HERE / "teardown_slurm.sh"
SKIP_RC = 3  # setup_slurm.sh: "SLURM cannot be installed here"


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs a real single-node SLURM (tests/slurm/setup_slurm.sh)")


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start (or reuse) the single-node cluster; yields a dict with node facts."""
    if os.environ.get("SCJEPA_SKIP_SLURM") == "1":
        pytest.skip("SCJEPA_SKIP_SLURM=1: SLURM tests switched off")
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("SLURM tests need root: they install slurm-wlm/munge with apt-get and start slurmctld/slurmd")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is unavailable to install slurm-wlm + munge")

    proc = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900)
    if proc.returncode == SKIP_RC:
        pytest.skip(f"SLURM cannot be installed here: {proc.stderr.strip().splitlines()[-1:]}")
    if proc.returncode != 0:
        subprocess.run(["bash", str(TEARDOWN)], capture_output=True, text=True, timeout=120)
        pytest.fail(
            f"tests/slurm/setup_slurm.sh failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    info = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G"], capture_output=True, text=True, check=True
    ).stdout.split("\n")[0]
    node, cpus, mem, gres = info.split("|")
    try:
        yield {"node": node, "cpus": int(cpus), "mem_mb": int(mem), "gres": gres, "setup_log": proc.stderr}
    finally:
        td = subprocess.run(["bash", str(TEARDOWN)], capture_output=True, text=True, timeout=300)
        if td.returncode != 0:
            print(f"teardown_slurm.sh rc={td.returncode}: {td.stderr}")
