"""score_finetune takes the corpus' store as an input only on the store path (tasks.finetune.stream): a dry
run of config/paper.yaml, where the corpus (scTab) is fine-tuned (Table 1's scTab test set)."""

import re

import pytest
import yaml

from wfhelpers import ROOT, snakemake


def _finetune_inputs(tmp_path, *overrides):
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    for entry in paper["datasets"].values():  # local sources must exist for the dry run (their fingerprints)
        if entry.get("source") == "local":
            (tmp_path / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / entry["path"]).write_text("placeholder")
    files = []
    for i, o in enumerate(overrides):
        files.append(tmp_path / f"override{i}.yaml")
        files[-1].write_text(yaml.safe_dump(o))
    targets = [f"results/scores/finetune/scjepa/{d}/0.json" for d in ("sctab", "hlca")]
    out = snakemake(*targets, "-n", "-d", tmp_path, "--configfile", ROOT / "config" / "paper.yaml", *files,
                    cwd=ROOT).stdout
    jobs = re.findall(r"rule score_finetune:\n\s+input: ([^\n]+)", out)
    assert len(jobs) == 2, out[-3000:]
    return {("sctab" if "data/sctab/" in j else "hlca"): j.split(", ") for j in jobs}


@pytest.mark.parametrize("stream", [None, "never"])
def test_store_is_an_input_of_the_corpus_only_on_the_store_path(tmp_path, stream):
    inputs = _finetune_inputs(tmp_path, *([{"tasks": {"finetune": {"stream": stream}}}] if stream else []))
    assert "results/store/sctab" not in inputs["hlca"]
    assert ("results/store/sctab" in inputs["sctab"]) == (stream is None)  # default: corpus
