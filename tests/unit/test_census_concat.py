"""Census sources through the release's locator and our downloader, and several Census datasets as one
(census_dataset_ids, Fig. 2's lung studies): a stand-in for the locator, the real download over a loopback
HTTP server, Census-shaped files (normalised X, counts in raw.X, CELLxGENE obs and var columns)."""

import functools
import http.server
import sys
import threading
import types

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scjepa.data import sources
from scjepa.data.sources import ChecksumError, census_https_url, fetch, sha256_file


def census_file(path, dataset_id, genes, n=30, seed=0):
    """A CELLxGENE source h5ad in miniature: log-normalised X, counts in raw.X, var index = Ensembl ids."""
    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix(rng.poisson(1.5, (n, len(genes))).astype(np.float32))
    obs = pd.DataFrame({
        "cell_type": pd.Categorical(rng.choice(["T cell", "B cell"], n)),
        "cell_type_ontology_term_id": pd.Categorical(["CL:0000084"] * n),
        "donor_id": pd.Categorical([f"donor{i % 3}" for i in range(n)]),
        "assay": pd.Categorical(["10x 3' v3"] * n), "tissue": pd.Categorical(["lung"] * n),
        "suspension_type": pd.Categorical(["cell"] * n), "is_primary_data": np.ones(n, bool),
    }, index=[f"BC{i}" for i in range(n)])  # barcodes repeat across studies on purpose
    var = pd.DataFrame({"feature_name": [f"SYM{g}" for g in genes]}, index=[f"ENSG{g:011d}" for g in genes])
    a = ad.AnnData(X=sp.csr_matrix(np.log1p(counts.toarray())), obs=obs, var=var)
    a.raw = ad.AnnData(X=counts, var=var)
    a.write_h5ad(path)
    return a


@pytest.fixture
def census_server(tmp_path, monkeypatch):
    """Files under tmp/h5ads served on 127.0.0.1; a cellxgene_census stand-in whose locator points there."""
    root = tmp_path / "srv"
    (root / "h5ads").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    mod = types.ModuleType("cellxgene_census")
    mod.located = []

    def get_source_h5ad_uri(dataset_id, *, census_version="stable"):
        mod.located.append((dataset_id, census_version))
        return {"uri": f"http://127.0.0.1:{httpd.server_port}/h5ads/{dataset_id}.h5ad", "s3_region": None}

    mod.get_source_h5ad_uri = get_source_h5ad_uri
    monkeypatch.setitem(sys.modules, "cellxgene_census", mod)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    yield root / "h5ads", mod
    httpd.shutdown()


def test_s3_locator_becomes_https():
    assert census_https_url("s3://cellxgene-data-public/cell-census/2023-05-15/h5ads/x.h5ad", "us-west-2") == \
        "https://cellxgene-data-public.s3.us-west-2.amazonaws.com/cell-census/2023-05-15/h5ads/x.h5ad"


def test_census_source_downloads_what_the_locator_names(census_server, tmp_path):
    folder, mod = census_server
    census_file(folder / "ds1.h5ad", "ds1", range(10))
    prov = fetch({"source": "census", "census_dataset_id": "ds1", "census_version": "2023-05-15"},
                 tmp_path / "raw.h5ad", progress=False)
    assert mod.located == [("ds1", "2023-05-15")]
    assert prov["sha256"] == sha256_file(folder / "ds1.h5ad") == sha256_file(tmp_path / "raw.h5ad")
    with pytest.raises(ChecksumError):
        fetch({"source": "census", "census_dataset_id": "ds1", "sha256": "0" * 64}, tmp_path / "again.h5ad",
              progress=False)
    assert not (tmp_path / "again.h5ad").exists()


def test_three_studies_become_one_dataset_with_study_as_batch(census_server, tmp_path):
    folder, _ = census_server
    census_file(folder / "travaglini.h5ad", "travaglini", range(0, 12), n=20, seed=1)
    census_file(folder / "wang.h5ad", "wang", range(2, 14), n=25, seed=2)
    census_file(folder / "melms.h5ad", "melms", range(1, 12), n=15, seed=3)
    spec = {"source": "census", "census_dataset_ids": ["travaglini", "wang", "melms"], "matrix": "raw.X",
            "census_version": "2025-01-30"}
    prov = fetch(spec, tmp_path / "raw.h5ad", progress=False)
    out = ad.read_h5ad(tmp_path / "raw.h5ad")
    assert out.n_obs == 60 and list(out.var_names) == [f"ENSG{g:011d}" for g in range(2, 12)]  # shared genes
    assert out.obs["dataset_id"].value_counts().to_dict() == {"wang": 25, "travaglini": 20, "melms": 15}
    assert out.obs_names.is_unique and "feature_name" in out.var
    # counts, not the normalised X, of every part
    src = ad.read_h5ad(folder / "wang.h5ad")
    wang = out[out.obs["dataset_id"] == "wang"]
    np.testing.assert_array_equal(wang.X.toarray(), src.raw.X[:, :10].toarray())  # wang starts at gene 2
    assert prov["matrix"] == "X" and [p["census_dataset_id"] for p in prov["parts"]] == spec["census_dataset_ids"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no part left behind


def test_config_takes_one_census_id_or_several_not_both():
    from scjepa.config import check, validate
    from scjepa.errors import InputError

    cfg = {"corpus": "c", "methods": ["pca"], "datasets": {
        "c": {"source": "synthetic", "synthetic": {"kind": "pretrain"}, "roles": ["pretrain"],
              "columns": {"cell_type": "cell_type", "donor": "donor"}},
        "lung": {"source": "census", "census_dataset_ids": ["a", "b"], "roles": ["integration"],
                 "columns": {"cell_type": "cell_type", "batch": "dataset_id"}}}}
    validate(cfg)
    cfg["datasets"]["lung"]["census_dataset_id"] = "a"
    with pytest.raises(InputError, match="not both"):
        validate(cfg)
