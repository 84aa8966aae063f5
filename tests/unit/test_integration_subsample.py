"""The integration task's per-run cap (tasks.integration.max_cells): a batch x label stratified draw."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from scjepa.config import validate
from scjepa.tasks.integration import IntegrationConfig, run_indices, stratified_subsample, subsample_indices


def _cells(n=10_000, seed=0):
    rng = np.random.default_rng(seed)
    batch = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    label = rng.choice([f"t{i}" for i in range(12)], n, p=np.r_[[0.3, 0.2, 0.1], np.full(9, 0.4 / 9)])
    return batch, label


def test_below_the_cap_the_run_is_the_uncapped_subsample():
    batch, label = _cells(1000)
    assert np.array_equal(run_indices(batch, label, 0.8, 50_000, 3), subsample_indices(1000, 0.8, 3))
    assert np.array_equal(run_indices(batch, label, 0.8, None, 3), subsample_indices(1000, 0.8, 3))
    assert np.array_equal(run_indices(batch, label, 0.8, 800, 3), subsample_indices(1000, 0.8, 3))


def test_the_cap_draws_exactly_max_cells_seeded_and_sorted():
    batch, label = _cells()
    a = run_indices(batch, label, 0.8, 2000, 1)
    assert len(a) == 2000 and len(np.unique(a)) == 2000 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, run_indices(batch, label, 0.8, 2000, 1))
    assert not np.array_equal(a, run_indices(batch, label, 0.8, 2000, 2))


def test_each_batch_label_stratum_keeps_its_share():
    batch, label = _cells()
    strata = np.char.add(batch, label)
    idx = stratified_subsample(strata, 1000, 0)
    keys, sizes = np.unique(strata, return_counts=True)
    got = dict(zip(*np.unique(strata[idx], return_counts=True)))
    for k, n_s in zip(keys, sizes):
        quota = n_s * 1000 / len(strata)
        assert np.floor(quota) <= got.get(k, 0) <= np.ceil(quota), (k, quota, got.get(k, 0))


def test_hand_computed_allocation():
    # strata x: 5 cells, y: 3, z: 2 (n = 10); m = 5 -> quotas 2.5, 1.5, 1.0 -> floors 2, 1, 1 (4),
    # remainders 0.5, 0.5, 0: one more to the larger of the tied strata (x)
    strata = np.array(list("xxxxxyyyzz"))
    idx = stratified_subsample(strata, 5, 0)
    assert dict(zip(*np.unique(strata[idx], return_counts=True))) == {"x": 3, "y": 1, "z": 1}


def _config(integration):
    cfg = yaml.safe_load((Path(__file__).parents[2] / "config" / "config.yaml").read_text())
    cfg.setdefault("tasks", {})["integration"] = integration
    return cfg


def test_config_default_and_null():
    assert IntegrationConfig().max_cells == 50_000
    assert IntegrationConfig.from_dict({"max_cells": None}).max_cells is None
    assert validate(_config({}))["tasks"]["integration"]["max_cells"] == 50_000
    assert validate(_config({"max_cells": 20000}))["tasks"]["integration"]["max_cells"] == 20000
    assert validate(_config({"max_cells": None}))["tasks"]["integration"]["max_cells"] is None
    with pytest.raises(Exception, match="max_cells"):
        validate(_config({"max_cells": 5}))
