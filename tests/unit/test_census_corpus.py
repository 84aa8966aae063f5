"""The corpus as a Census query (source census_query, scjepa.data.census_corpus): scTab's filters and the
chunked write. The Census is a stand-in over an in-memory AnnData that answers the API calls the query makes
(open_soma, obs.read with a value filter, get_anndata by soma_joinid); the filtering, chunking and writing
are the library's."""

import sys
import types

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scjepa.data.census_corpus import select_cells
from scjepa.data.sources import fetch
from scjepa.errors import InputError
from scjepa.ontology import load_obo, write_obo

# root (native cell) -> a -> b -> c; "T" and "B" below c (4 ancestors each); "shallow" right below the root
TERMS = pd.DataFrame({"term_id": ["CL:0000003", "CL:1", "CL:2", "CL:3", "CL:T", "CL:B", "CL:shallow", "CL:other"],
                      "name": ["native cell", "a", "b", "c", "T cell", "B cell", "shallow", "other"],
                      "parent_id": [None, "CL:0000003", "CL:1", "CL:2", "CL:3", "CL:3", "CL:0000003", None]})


def fake_census(n=400, seed=0):
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["T cell", "B cell", "shallow", "rare"], n, p=[0.4, 0.4, 0.15, 0.05])
    ids = {"T cell": "CL:T", "B cell": "CL:B", "shallow": "CL:shallow", "rare": "CL:other"}
    obs = pd.DataFrame({
        "soma_joinid": np.arange(n, dtype=np.int64),
        "cell_type": kinds, "cell_type_ontology_term_id": [ids[k] for k in kinds],
        "dataset_id": rng.choice(["d1", "d2"], n), "donor_id": rng.choice([f"p{i}" for i in range(6)], n),
        "assay": rng.choice(["10x 3' v3", "Smart-seq2"], n, p=[0.8, 0.2]), "tissue": "blood",
        "is_primary_data": rng.random(n) < 0.9})
    var = pd.DataFrame({"feature_id": [f"ENSG{i:05d}" for i in range(30)], "feature_name": [f"G{i}" for i in range(30)]})
    X = sp.csr_matrix(rng.poisson(1.0, (n, 30)).astype(np.float32))
    full = ad.AnnData(X=X, obs=obs.set_index(obs["soma_joinid"].astype(str)), var=var.set_index(var["feature_id"]))

    mod = types.ModuleType("cellxgene_census")
    mod.requests = []

    class _Table:
        def read(self, *, value_filter=None, column_names=None):
            df = obs.query(value_filter) if value_filter else obs
            df = df[list(column_names)] if column_names else df
            return types.SimpleNamespace(concat=lambda: types.SimpleNamespace(to_pandas=lambda: df.reset_index(drop=True)))

    class _Census(dict):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def open_soma(*, census_version=None):
        mod.version = census_version
        return _Census(census_data={"homo_sapiens": types.SimpleNamespace(obs=_Table())})

    def get_anndata(census, organism, *, X_name="raw", obs_coords=None, var_value_filter=None, obs_column_names=None,
                    var_column_names=None):
        mod.requests.append(len(obs_coords))
        a = full[np.asarray(obs_coords)]
        if var_value_filter:
            a = a[:, var.query(var_value_filter).index.to_numpy()]
        return ad.AnnData(X=a.X.copy(), obs=a.obs[obs_column_names].reset_index(drop=True),
                          var=a.var[var_column_names].reset_index(drop=True))

    mod.open_soma, mod.get_anndata = open_soma, get_anndata
    return mod, full


def test_select_cells_applies_counts_and_ontology(tmp_path):
    _, full = fake_census()
    write_obo(TERMS, tmp_path / "cl.obo", ontology="cl", data_version="cl/2023-07-20")
    onto = load_obo(tmp_path / "cl.obo")
    obs = full.obs.reset_index(drop=True)
    kept = select_cells(obs, min_cells_per_type=30, min_tech_samples_per_type=5)
    assert set(kept["cell_type"]) == {"T cell", "B cell", "shallow"}  # 'rare' has too few cells
    kept = select_cells(obs, min_cells_per_type=30, min_tech_samples_per_type=5, ontology=onto,
                        ontology_root="CL:0000003", min_ancestors=4)
    assert set(kept["cell_type"]) == {"T cell", "B cell"}  # 'shallow' has one ancestor
    assert (kept["tech_sample"] == kept["dataset_id"] + "_" + kept["donor_id"]).all()
    with pytest.raises(InputError, match="no cell type passes"):
        select_cells(obs, min_cells_per_type=10_000, min_tech_samples_per_type=1)


def test_census_query_streams_the_corpus_in_chunks(tmp_path, monkeypatch):
    mod, full = fake_census()
    monkeypatch.setitem(sys.modules, "cellxgene_census", mod)
    write_obo(TERMS, tmp_path / "cl.obo", ontology="cl", data_version="cl/2023-07-20")
    (tmp_path / "genes.tsv").write_text("gene_id\tgene_symbol\n" + "".join(f"ENSG{i:05d}\tG{i}\n" for i in range(0, 30, 2)))
    spec = {"source": "census_query", "census_version": "2023-05-15", "ontology_path": str(tmp_path / "cl.obo"),
            "census_query": {"min_cells_per_type": 30, "min_tech_samples_per_type": 5, "min_ancestors": 4,
                             "genes_file": str(tmp_path / "genes.tsv"), "chunk_cells": 50}}
    prov = fetch(spec, tmp_path / "raw.h5ad", progress=False)
    out = ad.read_h5ad(tmp_path / "raw.h5ad")
    expect = full.obs[(full.obs.is_primary_data) & (full.obs.assay == "10x 3' v3")
                      & full.obs.cell_type.isin(["T cell", "B cell"])]
    assert list(out.obs["soma_joinid"]) == list(expect["soma_joinid"])
    assert list(out.var["feature_id"]) == [f"ENSG{i:05d}" for i in range(0, 30, 2)]
    np.testing.assert_array_equal(out.X.toarray(), full[expect.index, out.var["feature_id"].to_numpy()].X.toarray())
    assert max(mod.requests) <= 50 and len(mod.requests) == -(-len(expect) // 50)  # bounded chunks
    assert mod.version == "2023-05-15" and prov["query"]["n_cell_types"] == 2
    assert {"tech_sample", "cell_type_ontology_term_id", "dataset_id", "donor_id"} <= set(out.obs.columns)
