"""Session fixture: the tiny workflow run once."""

import pytest

from wfhelpers import ROOT, TINY, snakemake


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The whole tiny workflow (`rule all`), once per session, in its own working directory."""
    work = tmp_path_factory.mktemp("tiny_run")
    snakemake("-d", work, "--configfile", TINY, "--cores", "2", cwd=ROOT)
    return work
