"""Hierarchy-corrected F1 in the readouts (zero-shot, tables): scjepa.ontology.Hierarchy wired in."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scjepa.errors import InputError
from scjepa.ontology import Hierarchy, load_hierarchy, load_obo, write_obo
from scjepa.report.tables import annotation_columns
from scjepa.tasks.knn import zero_shot

TERMS = pd.DataFrame({"term_id": ["X:0", "X:1", "X:2", "X:3"], "name": ["cell", "T cell", "CD4 T cell", "B cell"],
                      "parent_id": [None, "X:0", "X:1", "X:0"]})


@pytest.fixture
def obo(tmp_path):
    write_obo(TERMS, tmp_path / "t.obo", ontology="x", data_version="x/1")
    return tmp_path / "t.obo"


def test_off_means_no_hierarchy(obo):
    assert load_hierarchy(None, obo) is None and load_hierarchy({"enabled": False}, obo) is None
    with pytest.raises(InputError, match="tasks.zero_shot.hierarchy"):
        load_hierarchy({"enabled": True}, None)


def test_labels_by_name_or_by_id_column(obo):
    h = Hierarchy(load_obo(obo))
    obs = pd.DataFrame({"cell_type": ["T cell", "B cell"]})
    assert h.label_ids(obs) == {"T cell": "X:1", "B cell": "X:3"}
    obs_ids = pd.DataFrame({"cell_type": ["T", "B"], "cell_type_id": ["X:1", "X:3"]})
    assert h.label_ids(obs_ids) == {"T": "X:1", "B": "X:3"}
    with pytest.raises(InputError, match="in one dataset"):
        h.label_ids(obs, pd.DataFrame({"cell_type": ["T cell"], "cell_type_id": ["X:2"]}))


def test_zero_shot_scores_a_subtype_prediction_as_right(obo):
    # reference: CD4 T cells near the query's "T cell" cells, so kNN predicts the subtype
    rng = np.random.default_rng(0)
    ref = np.r_[rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))]
    qry = np.r_[rng.normal(0, 0.1, (10, 2)), rng.normal(5, 0.1, (10, 2))]
    obs = pd.DataFrame({"cell_type": ["CD4 T cell"] * 20 + ["B cell"] * 20 + ["T cell"] * 10 + ["B cell"] * 10,
                        "split": ["train"] * 40 + ["test"] * 20}, index=[f"c{i}" for i in range(60)])
    a = ad.AnnData(obs=obs, obsm={"X_emb": np.r_[ref, qry].astype(np.float32)})
    m, _ = zero_shot(a, probe=False, hierarchy=Hierarchy(load_obo(obo)))
    assert m["knn_accuracy"] == pytest.approx(0.5) and m["knn_hier_accuracy"] == pytest.approx(1.0)
    assert m["knn_hier_n_corrected"] == 10 and m["knn_hier_macro_f1"] > m["knn_macro_f1"]
    plain, _ = zero_shot(a, probe=False)
    assert not any("hier" in k for k in plain)


def test_table_columns_only_when_switched_on():
    off = [c.metric for c in annotation_columns(["d"], probe=True)]
    on = [c.metric for c in annotation_columns(["d"], probe=True, hierarchy=True)]
    assert not any("hier" in m for m in off)
    assert {"knn_hier_macro_f1", "probe_hier_micro_f1", "hier_macro_f1"} <= set(on) and set(off) < set(on)
