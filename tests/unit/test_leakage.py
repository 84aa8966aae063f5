"""Splits taken from the corpus (split_from) and the leakage check (scjepa.data.leakage)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scjepa.data.leakage import EXCLUDED, check_leakage, read_obs_columns, split_table, splits_from
from scjepa.errors import InputError

BY = ["dataset_id", "donor_id"]


def corpus_obs():
    # dataset A: donors a0..a5, dataset B: donors b0..b2; donor names repeat across datasets on purpose
    rows = []
    split_of = {"a0": "train", "a1": "train", "a2": "val", "a3": "test", "a4": "test", "a5": "train",
                "b0": "train", "b1": "test", "b2": "val"}
    for donor, split in split_of.items():
        for _ in range(4):
            rows.append({"dataset_id": "A" if donor[0] == "a" else "B", "donor_id": "d" + donor[1], "split": split})
    return pd.DataFrame(rows)


def test_split_from_gives_each_donor_the_corpus_split():
    table = split_table(corpus_obs(), BY)
    ev = pd.DataFrame({"dataset_id": ["A"] * 5 + ["B"], "donor_id": ["d0", "d3", "d4", "d2", "d9", "d1"]})
    out = splits_from(ev, table, BY)
    assert list(out) == ["train", "test", "test", "val", EXCLUDED, "test"]
    assert list(splits_from(ev, table, BY, unmatched="test"))[4] == "test"
    with pytest.raises(InputError, match="not in"):
        splits_from(ev, table, BY, unmatched="error", key="datasets.hlca.split_from")


def test_donor_ids_that_repeat_across_datasets_are_told_apart():
    table = split_table(corpus_obs(), BY)
    # donor d1 is train in A but test in B
    assert table["A\x1fd1"] == "train" and table["B\x1fd1"] == "test"
    with pytest.raises(InputError, match="several splits"):
        split_table(corpus_obs(), ["donor_id"])  # donor_id alone does not identify donors


def test_a_leak_is_detected_with_dataset_name_and_count():
    ev = pd.DataFrame({"dataset_id": ["A"] * 6, "donor_id": ["d0", "d0", "d3", "d2", "d4", "d4"],
                       "split": ["test", "test", "test", "test", "train", "val"]})
    with pytest.raises(InputError) as info:
        check_leakage(corpus_obs(), {"hlca": ev}, BY, corpus="sctab")
    msg = str(info.value)
    assert "dataset 'hlca': 3 test cells of 2 donor(s)" in msg and "sctab" in msg


def test_split_from_passes_the_check_and_an_independent_split_does_not():
    corpus = corpus_obs()
    ev = pd.DataFrame({"dataset_id": ["A"] * 60, "donor_id": [f"d{i % 6}" for i in range(60)]})
    ev["split"] = splits_from(ev, split_table(corpus, BY), BY)
    report = check_leakage(corpus, {"hlca": ev}, BY, corpus="sctab")
    assert report["datasets"]["hlca"]["leaking_cells"] == 0 and report["datasets"]["hlca"]["n_test_cells"] == 20
    # the bypass: the dataset re-split by its own donors, ignoring the corpus -> caught
    from scjepa.data.splits import donor_split

    ev["split"] = donor_split(ev["dataset_id"] + ev["donor_id"], seed=3)
    if set(ev.loc[ev.split == "test", "donor_id"]) <= {"d3", "d4"}:
        ev["split"] = donor_split(ev["dataset_id"] + ev["donor_id"], seed=4)
    with pytest.raises(InputError, match="leak into pretraining"):
        check_leakage(corpus, {"hlca": ev}, BY, corpus="sctab")


def test_the_check_cannot_be_skipped_by_dropping_the_donor_columns():
    ev = pd.DataFrame({"donor_id": ["d0"], "split": ["test"]})
    with pytest.raises(InputError, match="dataset_id") as info:
        check_leakage(corpus_obs(), {"hlca": ev}, BY, corpus="sctab")
    assert "datasets.hlca" in str(info.value)


def test_read_obs_columns_names_the_file_and_column(tmp_path):
    obs = corpus_obs()
    obs.index = [f"c{i}" for i in range(len(obs))]
    a = ad.AnnData(X=sp.csr_matrix((len(obs), 2), dtype=np.float32), obs=obs.astype("category"))
    a.write_h5ad(tmp_path / "p.h5ad")
    got = read_obs_columns(tmp_path / "p.h5ad", ["donor_id", "split"])
    assert list(got["split"]) == list(obs["split"]) and list(got.index) == list(obs.index)
    with pytest.raises(InputError, match="no column 'tech_sample'") as info:
        read_obs_columns(tmp_path / "p.h5ad", ["tech_sample"], key="datasets.sctab.keep_columns")
    assert "p.h5ad" in str(info.value) and "datasets.sctab.keep_columns" in str(info.value)
