"""A user's own files: the traps a first real run falls into, each with a message that names the user's file
and config key and says what to do (issue: a user's own config and data)."""

import json

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scjepa.data.genes import GeneSpace
from scjepa.data.preprocess import preprocess_dataset
from scjepa.data.sources import fetch, file_fingerprint
from scjepa.errors import InputError
from scjepa.io import read_h5ad
from scjepa.report.tables import NA, NO_TRUTH, make_table, to_markdown

SETTINGS = {"target_sum": 1e4, "chunk_size": 50, "min_coverage": 0.5, "split_fractions": [0.7, 0.15, 0.15],
            "split_seed": 0}


def counts(n=40, genes=("g0", "g1", "g2", "g3"), donors=1, seed=0, **obs_cols):
    rng = np.random.default_rng(seed)
    obs = pd.DataFrame({"ct": rng.choice(["T", "B"], n), "donor_id": [f"d{i % donors}" for i in range(n)],
                        "t": np.repeat([0.0, 1.0, 2.0, 3.0], n // 4), **obs_cols},
                       index=[f"c{i}" for i in range(n)])
    X = sp.csr_matrix(rng.poisson(3.0, (n, len(genes))).astype(np.float32))
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=list(genes)))


def stage(tmp_path, adata, spec, *, user_file=None, space=("g0", "g1", "g2", "g3")):
    """What the workflow does before preprocess: the raw copy, its provenance, the gene space."""
    raw = tmp_path / "resources" / "raw.h5ad"
    raw.parent.mkdir(parents=True, exist_ok=True)
    src = user_file or raw
    adata.write_h5ad(src)
    prov = fetch({"dataset": spec["dataset"], "source": "local", "path": str(src)}, raw) if user_file else \
        {"source": "synthetic", "sha256": "", "x_kind": "counts"}
    if not user_file:
        prov["origin"] = "generated"
    (tmp_path / "prov.json").write_text(json.dumps(prov))
    genes = tmp_path / "genes.tsv"
    GeneSpace(list(space), [f"S{g}" for g in space]).write(genes)
    return raw, tmp_path / "prov.json", genes


def test_time_course_with_one_donor_needs_no_donor_split(tmp_path):
    spec = {"dataset": "tc", "source": "local", "roles": ["timecourse"], "columns": {"time": "t", "donor": "donor_id"}}
    raw, prov, genes = stage(tmp_path, counts(donors=1), spec, user_file=tmp_path / "mine.h5ad")
    preprocess_dataset(spec, SETTINGS, raw, prov, genes, tmp_path / "out.h5ad", progress=False)
    obs = read_h5ad(tmp_path / "out.h5ad").obs
    assert "split" not in obs and list(obs["time"].unique()) == [0.0, 1.0, 2.0, 3.0]


def test_annotation_role_with_one_donor_names_the_users_file_and_key(tmp_path):
    spec = {"dataset": "mine", "source": "local", "roles": ["in_distribution"],
            "columns": {"cell_type": "ct", "donor": "donor_id"}}
    user = tmp_path / "my_cells.h5ad"
    raw, prov, genes = stage(tmp_path, counts(donors=1), spec, user_file=user)
    with pytest.raises(InputError) as info:
        preprocess_dataset(spec, SETTINGS, raw, prov, genes, tmp_path / "out.h5ad", progress=False)
    msg = str(info.value)
    assert str(user.resolve()) in msg and "datasets.mine" in msg and "at least 3" in msg
    assert "Map 'donor' to a column with more donors" in msg
    assert not (tmp_path / "out.h5ad").exists()


def test_bad_values_in_a_local_file_name_that_file_not_the_copy(tmp_path):
    adata = counts(donors=4)
    adata.X = adata.X.astype(np.float32)
    adata.X[3, 1] = np.nan
    spec = {"dataset": "mine", "source": "local", "roles": ["in_distribution"],
            "columns": {"cell_type": "ct", "donor": "donor_id"}}
    user = tmp_path / "my_cells.h5ad"
    raw, prov, genes = stage(tmp_path, adata, spec, user_file=user)
    with pytest.raises(InputError) as info:
        preprocess_dataset(spec, SETTINGS, raw, prov, genes, tmp_path / "out.h5ad", progress=False)
    msg = str(info.value)
    assert msg.startswith(f"file '{user.resolve()}'") and "NaN" in msg and "datasets.mine" in msg
    assert "read from its copy" in msg


def test_missing_local_path_names_the_config_key(tmp_path):
    with pytest.raises(InputError) as info:
        fetch({"dataset": "mine", "source": "local", "path": str(tmp_path / "nope.h5ad")}, tmp_path / "raw.h5ad")
    assert info.value.key == "datasets.mine.path" and "nope.h5ad" in str(info.value)
    with pytest.raises(InputError) as info:
        file_fingerprint(tmp_path / "nope.h5ad")
    assert info.value.for_dataset("mine").key == "datasets.mine.path"


def test_fingerprint_follows_content_not_mtime(tmp_path):
    f, cache = tmp_path / "a.h5ad", tmp_path / "cache.json"
    f.write_bytes(b"one")
    first = file_fingerprint(f, cache)
    import os

    os.utime(f, (1, 1))  # touched: new mtime, same bytes
    assert file_fingerprint(f, cache) == first
    f.write_bytes(b"two")
    assert file_fingerprint(f, cache)["sha256"] != first["sha256"]
    assert len(json.loads(cache.read_text())) == 1  # old stamps of the file are dropped


def test_duplicated_symbols_match_the_unique_ones_and_report_the_rest(tmp_path):
    # the corpus carries symbol "DUP" twice (a real corpus had 41 such); the source names genes by symbol
    space = GeneSpace([f"ENSG{i}" for i in range(6)], ["A", "B", "C", "DUP", "DUP", "F"])
    al = space.alignment(["A", "B", "C", "DUP", "F", "X"], min_coverage=0.5)
    assert al.matched_by == "symbol" and al.n_matched == 4 and al.ambiguous_symbols == ["DUP"]
    assert list(al.dst_cols) == [0, 1, 2, 5]
    # too few unique symbols left: the error gives both counts and the ambiguous ones
    with pytest.raises(InputError, match=r"0 of its 3 genes match .* by id and 1 by symbol \(1 ambiguous"):
        space.alignment(["A", "DUP", "Y"], min_coverage=0.5)


def test_duplicated_symbols_are_counted_in_the_provenance(tmp_path):
    spec = {"dataset": "mine", "source": "synthetic", "roles": ["timecourse"], "columns": {"time": "t"}}
    adata = counts(genes=("SA", "SB", "SC", "SD"))
    raw, prov, genes = stage(tmp_path, adata, spec)
    GeneSpace(["g0", "g1", "g2", "g3", "g4"], ["SA", "SB", "SC", "SD", "SD"]).write(genes)
    out = preprocess_dataset(spec, SETTINGS, raw, prov, genes, tmp_path / "out.h5ad", progress=False)
    assert out["matched_by"] == "symbol" and out["n_genes_matched"] == 3
    assert out["n_ambiguous_symbols"] == 1 and out["ambiguous_symbols_examples"] == ["SD"]


def test_one_accidental_match_does_not_suggest_lowering_min_coverage():
    space = GeneSpace([f"ENSG{i:05d}" for i in range(100)], [f"SYM{i}" for i in range(100)])
    source = ["ENSG00007"] + [f"gene_{i}" for i in range(99)]  # one id that happens to match
    with pytest.raises(InputError) as info:
        space.alignment(source, min_coverage=0.5, key="datasets.mine")
    msg = str(info.value)
    assert "1 of its 100 genes match the corpus gene space by id and 0 by symbol" in msg
    assert "datasets.mine.columns.gene_ids" in msg and "min_coverage" not in msg.split("minimum")[1]


def test_a_gene_panel_below_coverage_suggests_min_coverage():
    space = GeneSpace([f"ENSG{i:05d}" for i in range(100)])
    with pytest.raises(InputError) as info:
        space.alignment([f"ENSG{i:05d}" for i in range(10)], min_coverage=0.5, key="datasets.xenium")
    assert "gene panel" in str(info.value) and "datasets.xenium.min_coverage" in str(info.value)


def _old_layout(path, adata):
    """An h5ad as anndata < 0.7 laid it out: raw counts in top-level 'raw.X' / 'raw.var'."""
    adata.write_h5ad(path)
    with h5py.File(path, "a") as f:
        for key in ("X", "var", "varm"):
            if f"raw/{key}" in f:
                f.move(f"raw/{key}", f"raw.{key}")
        del f["raw"]


def test_old_layout_raw_counts_are_read_with_matrix_raw_x(tmp_path):
    adata = counts(donors=4)
    raw_counts = adata.X.toarray()
    adata.raw = adata.copy()
    adata.X = sp.csr_matrix(np.log1p(raw_counts))  # X normalised, counts kept in raw (CELLxGENE style)
    spec = {"dataset": "old", "source": "synthetic", "roles": ["in_distribution"], "matrix": "raw.X",
            "columns": {"cell_type": "ct", "donor": "donor_id"}}
    raw, prov, genes = stage(tmp_path, adata, spec)
    _old_layout(raw, adata)
    with h5py.File(raw) as f:
        assert "raw.X" in f and "raw" not in f
    preprocess_dataset(spec, SETTINGS, raw, prov, genes, tmp_path / "out.h5ad", progress=False)
    np.testing.assert_array_equal(read_h5ad(tmp_path / "out.h5ad").layers["counts"].toarray(), raw_counts)


def test_matrix_missing_names_the_key_and_what_the_file_has(tmp_path):
    spec = {"dataset": "mine", "source": "synthetic", "roles": ["timecourse"], "matrix": "raw.X",
            "columns": {"time": "t"}}
    raw, prov, genes = stage(tmp_path, counts(), spec)
    with pytest.raises(InputError) as info:
        preprocess_dataset(spec, SETTINGS, raw, prov, genes, tmp_path / "out.h5ad", progress=False)
    assert info.value.key == "datasets.mine.matrix" and "it has:" in str(info.value)


def test_bundled_source_keeps_the_datasets_own_name(tmp_path):
    prov = fetch({"dataset": "my_pbmc", "source": "bundled", "name": "pbmc68k_reduced"}, tmp_path / "raw.h5ad")
    assert prov["bundled_name"] == "pbmc68k_reduced" and "name" not in prov and "dataset" not in prov


def test_no_ground_truth_is_not_cannot_serve():
    recs = [
        {"task": "bridge", "method": "pca", "dataset": "tc", "seed": None, "status": "ok", "metrics": {},
         "metrics_unavailable": {"fate_accuracy": "the dataset has no 'fate' column"}},
        {"task": "bridge", "method": "supervised", "dataset": "tc", "seed": None, "status": "n/a", "metrics": {}},
    ]
    t = make_table(recs, ["pca", "supervised"], ["tc"], "fate_accuracy", task="bridge")
    assert [t.cells[0][0].status, t.cells[1][0].status] == [NO_TRUTH, NA]
    md = to_markdown(t)
    assert "no truth: the dataset has no ground truth for this readout" in md
