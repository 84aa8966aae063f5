"""Session fixture: the tiny workflow run once."""

import os
from pathlib import Path

import pytest

from wfhelpers import ROOT, TINY, snakemake


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The whole tiny workflow (`rule all`), once per session, in its own working directory.

    Developers may set SCJEPA_TINY_RUN to a working directory of an earlier tiny run: it is brought
    up to date (Snakemake reruns what changed) and reused.
    """
    reuse = os.environ.get("SCJEPA_TINY_RUN")
    work = Path(reuse) if reuse else tmp_path_factory.mktemp("tiny_run")
    snakemake("-d", work, "--configfile", TINY, "--cores", "2", cwd=ROOT)
    return work
