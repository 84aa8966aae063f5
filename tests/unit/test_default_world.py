"""The default run's annotation datasets, as config/config.yaml declares them: every cell type has at
least 20 query (test) cells, so one cell moves a type's F1 by at most a few points (docs/PROTOCOL.md §6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scjepa.config import validate
from scjepa.data.preprocess import split_fractions
from scjepa.data.sources import generate_synthetic
from scjepa.data.splits import donor_split

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config():
    return validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))


@pytest.mark.parametrize("role", ["in_distribution", "out_of_distribution"])
def test_every_type_has_20_query_cells(config, role):
    names = [n for n, d in config["datasets"].items() if role in d["roles"]]
    assert names, f"the default config has no {role} dataset"
    for name in names:
        spec = config["datasets"][name]
        a = generate_synthetic(spec["synthetic"])
        fractions = split_fractions(spec, config["preprocess"])
        split = donor_split(a.obs["donor"].to_numpy(), fractions, config["preprocess"]["split_seed"])
        query = a.obs["cell_type"][split == config["tasks"]["zero_shot"]["query_split"]]
        counts = query.value_counts()
        present = a.obs["cell_type"].value_counts()
        assert set(counts[counts > 0].index) == set(present[present > 0].index), name
        assert counts[counts > 0].min() >= 20, f"{name}: {counts.idxmin()} has {counts.min()} query cells"
