"""Tests of scjepa.data.sources: every source kind, the URL path against a real local server."""

from __future__ import annotations

import hashlib
import http.server
import importlib
import importlib.util
import json
import sys
import threading
import types
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scjepa.data import sources
from scjepa.data.sources import ChecksumError, DownloadError, fetch, fetch_url
from scjepa.errors import InputError


# --------------------------------------------------------------------------------------------
# fixtures


def _tiny_adata(n_obs: int = 40, n_vars: int = 30, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(rng.poisson(1.0, size=(n_obs, n_vars)).astype(np.float32))
    a = ad.AnnData(X)
    a.obs_names = [f"c{i}" for i in range(n_obs)]
    a.var_names = [f"g{j}" for j in range(n_vars)]
    a.obs["cell_type"] = ["t0", "t1"] * (n_obs // 2)
    return a


@pytest.fixture(scope="module")
def payload(tmp_path_factory) -> bytes:
    """Bytes of a small but real h5ad, padded by data to a few hundred kB."""
    path = tmp_path_factory.mktemp("payload") / "tiny.h5ad"
    a = _tiny_adata(n_obs=400, n_vars=200)
    a.obsm["pad"] = np.random.default_rng(1).normal(size=(400, 200)).astype(np.float32)
    a.write_h5ad(path)
    return path.read_bytes()


class _Server:
    def __init__(self, payload: bytes):
        self.payload = payload
        self.hits: dict[str, int] = {}
        self.release = threading.Event()  # ends stalled handlers at teardown
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _head(self, n: int, ctype: str = "application/octet-stream"):
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(n))
                self.end_headers()

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                data = server.payload
                if path == "/good.h5ad":
                    self._head(len(data))
                    self.wfile.write(data)
                elif path == "/truncated.h5ad":
                    # promise N bytes, send N/2, close: a dropped connection mid-file
                    self._head(len(data))
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif path == "/flaky.h5ad":
                    # first request dropped mid-file, later ones complete
                    self._head(len(data))
                    if server.hits[path] == 1:
                        self.wfile.write(data[: len(data) // 3])
                        self.wfile.flush()
                        self.close_connection = True
                    else:
                        self.wfile.write(data)
                elif path == "/stall.h5ad":
                    self._head(len(data))
                    self.wfile.write(data[:1000])
                    self.wfile.flush()
                    server.release.wait(5)
                    self.close_connection = True
                elif path == "/page.h5ad":
                    body = b"<html><body>Please log in</body></html>"
                    self._head(len(body), "text/html")
                    self.wfile.write(body)
                elif path == "/error500.h5ad":
                    self.send_error(500, "boom")
                else:
                    self.send_error(404, "Not Found")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def server(payload):
    srv = _Server(payload)
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Requests to 127.0.0.1 must never be routed through a proxy from the environment."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(folder: Path, keep: tuple[str, ...] = ()) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# --------------------------------------------------------------------------------------------
# url


def test_url_good_file(server, payload, tmp_path):
    dest = tmp_path / "ds" / "raw.h5ad"
    prov = fetch(
        {"source": "url", "url": server.url("good.h5ad"), "sha256": _sha(payload)},
        dest,
        progress=False,
    )
    assert dest.read_bytes() == payload
    assert prov["sha256"] == _sha(payload) == sources.sha256_file(dest)
    assert prov["source"] == "url" and prov["origin"] == server.url("good.h5ad")
    assert prov["bytes"] == len(payload) and prov["X_kind"] == "as published"
    assert _leftovers(dest.parent) == ["raw.h5ad"]
    assert ad.read_h5ad(dest).n_obs == 400
    json.dumps(prov)  # the workflow writes it as JSON


def test_url_accepts_prefixed_uppercase_sha_and_no_sha(server, payload, tmp_path):
    dest = tmp_path / "raw.h5ad"
    assert fetch_url(server.url("good.h5ad"), "sha256:" + _sha(payload).upper(), dest, progress=False) == _sha(payload)
    dest2 = tmp_path / "raw2.h5ad"
    assert fetch_url(server.url("good.h5ad"), None, dest2, progress=False) == _sha(payload)


def test_url_checksum_mismatch_leaves_nothing(server, payload, tmp_path):
    folder = tmp_path / "ds"
    dest = folder / "raw.h5ad"
    wrong = "0" * 64
    hits_before = server.hits.get("/good.h5ad", 0)
    with pytest.raises(ChecksumError) as info:
        fetch_url(server.url("good.h5ad"), wrong, dest, progress=False, backoff=0)
    msg = str(info.value)
    assert wrong in msg and _sha(payload) in msg and server.url("good.h5ad") in msg
    assert not dest.exists()
    assert _leftovers(folder) == []
    assert server.hits["/good.h5ad"] == hits_before + 1  # a complete wrong file is not retried


def test_url_checksum_mismatch_replaces_nothing(server, tmp_path):
    """An existing dest is left untouched by a failed download."""
    dest = tmp_path / "raw.h5ad"
    dest.write_bytes(b"old")
    with pytest.raises(ChecksumError):
        fetch_url(server.url("good.h5ad"), "f" * 64, dest, progress=False, backoff=0)
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == ["raw.h5ad"]


def test_url_dropped_connection_is_retried_then_fails(server, tmp_path):
    folder = tmp_path / "ds"
    dest = folder / "raw.h5ad"
    with pytest.raises(DownloadError) as info:
        # no sha256: the short read alone must be detected
        fetch_url(server.url("truncated.h5ad"), None, dest, progress=False, retries=2, backoff=0, timeout=5)
    msg = str(info.value)
    assert "3 attempt" in msg and "bytes" in msg and server.url("truncated.h5ad") in msg
    assert server.hits["/truncated.h5ad"] == 3
    assert not isinstance(info.value, ChecksumError)
    assert not dest.exists()
    assert _leftovers(folder) == []


def test_url_dropped_connection_then_recovers(server, payload, tmp_path):
    dest = tmp_path / "raw.h5ad"
    sha = fetch_url(server.url("flaky.h5ad"), _sha(payload), dest, progress=False, retries=2, backoff=0)
    assert sha == _sha(payload) and dest.read_bytes() == payload
    assert server.hits["/flaky.h5ad"] == 2
    assert _leftovers(tmp_path) == ["raw.h5ad"]


def test_url_stalled_server_times_out(server, tmp_path):
    dest = tmp_path / "raw.h5ad"
    with pytest.raises(DownloadError, match="timed out|attempt"):
        fetch_url(server.url("stall.h5ad"), None, dest, progress=False, retries=1, backoff=0, timeout=0.3)
    assert server.hits["/stall.h5ad"] == 2
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_url_404_is_clear_and_not_retried(server, tmp_path):
    dest = tmp_path / "raw.h5ad"
    with pytest.raises(DownloadError) as info:
        fetch_url(server.url("missing.h5ad"), None, dest, progress=False, retries=2, backoff=0)
    msg = str(info.value)
    assert "404" in msg and server.url("missing.h5ad") in msg
    assert server.hits["/missing.h5ad"] == 1
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_url_server_error_is_retried(server, tmp_path):
    dest = tmp_path / "raw.h5ad"
    with pytest.raises(DownloadError, match="500"):
        fetch_url(server.url("error500.h5ad"), None, dest, progress=False, retries=1, backoff=0)
    assert server.hits["/error500.h5ad"] == 2
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_url_html_page_is_not_an_h5ad(server, tmp_path):
    dest = tmp_path / "raw.h5ad"
    with pytest.raises(DownloadError, match="not a readable h5ad"):
        fetch_url(server.url("page.h5ad"), None, dest, progress=False, backoff=0)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_url_refused_connection(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "raw.h5ad"
    with pytest.raises(DownloadError, match="2 attempt"):
        fetch_url(f"http://127.0.0.1:{port}/x.h5ad", None, dest, progress=False, retries=1, backoff=0, timeout=2)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "spec, key",
    [
        ({"source": "url"}, "url"),
        ({"source": "url", "url": "s3://bucket/key.h5ad"}, "url"),
        ({"source": "url", "url": "/data/x.h5ad"}, "url"),
        ({"source": "url", "url": "http://127.0.0.1:1/x.h5ad", "sha256": "abc"}, "sha256"),
    ],
)
def test_url_bad_spec(spec, key, tmp_path):
    with pytest.raises(InputError) as info:
        fetch(spec, tmp_path / "raw.h5ad", progress=False)
    assert info.value.key == key and f"key '{key}'" in str(info.value)


# --------------------------------------------------------------------------------------------
# local


@pytest.fixture
def local_h5ad(tmp_path) -> Path:
    path = tmp_path / "user" / "my data.h5ad"
    path.parent.mkdir()
    _tiny_adata().write_h5ad(path)
    return path


@pytest.mark.parametrize("link", [False, True])
def test_local_copy_or_link(local_h5ad, tmp_path, link):
    dest = tmp_path / "ds" / "raw.h5ad"
    sha = sources.sha256_file(local_h5ad)
    prov = fetch({"source": "local", "path": str(local_h5ad), "sha256": sha, "link": link}, dest)
    assert prov["sha256"] == sha and prov["source"] == "local" and prov["linked"] is link
    assert prov["origin"] == str(local_h5ad.resolve())
    assert dest.read_bytes() == local_h5ad.read_bytes()
    assert (dest.stat().st_ino == local_h5ad.stat().st_ino) is link
    assert _leftovers(dest.parent) == ["raw.h5ad"]


def test_local_checksum_mismatch(local_h5ad, tmp_path):
    dest = tmp_path / "ds" / "raw.h5ad"
    for link in (False, True):
        with pytest.raises(ChecksumError, match="expected " + "a" * 64):
            sources.fetch_local(local_h5ad, dest, sha256="a" * 64, link=link)
        assert _leftovers(dest.parent) == []


def test_local_errors_name_the_path(tmp_path):
    bad_suffix = tmp_path / "counts.csv"
    bad_suffix.write_text("a,b\n")
    with pytest.raises(InputError, match="counts.csv"):
        sources.fetch_local(bad_suffix, tmp_path / "raw.h5ad")
    missing = tmp_path / "nope.h5ad"
    with pytest.raises(InputError, match="nope.h5ad"):
        sources.fetch_local(missing, tmp_path / "raw.h5ad")
    corrupt = tmp_path / "corrupt.h5ad"
    corrupt.write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="corrupt.h5ad"):
        sources.fetch_local(corrupt, tmp_path / "out" / "raw.h5ad")
    assert not (tmp_path / "raw.h5ad").exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# bundled


def test_bundled_pbmc68k_reduced(tmp_path):
    dest = tmp_path / "pbmc" / "raw.h5ad"
    prov = fetch({"source": "bundled", "name": "pbmc68k_reduced"}, dest)
    assert prov["source"] == "bundled" and prov["package"] == "scanpy"
    assert prov["X_kind"] == "log-normalised (not counts)" and prov["x_kind"] == "log1p_normalized"
    assert prov["sha256"] == sources.sha256_file(dest)
    assert len(prov["source_file_sha256"]) == 64 and "10x_pbmc68k_reduced.h5ad" in prov["origin"]
    a = ad.read_h5ad(dest)
    assert a.shape == (700, 765) and a.raw is None
    assert sp.issparse(a.X) and a.X.dtype == np.float32 and a.X.min() >= 0  # log-normalised
    assert a.layers["scaled"].min() < 0  # the shipped scaled matrix, kept aside
    assert "bulk_labels" in a.obs
    assert a.uns["scjepa_source"]["X_kind"] == "log-normalised (not counts)"
    json.dumps(prov)
    assert _leftovers(dest.parent) == ["raw.h5ad"]


@pytest.mark.parametrize("name, pattern", [("pbmc3k_processed", "network"), ("pbmc3k", "network"), ("foo", "unknown")])
def test_bundled_unsupported(name, pattern, tmp_path):
    with pytest.raises(InputError, match=pattern) as info:
        fetch({"source": "bundled", "name": name}, tmp_path / "raw.h5ad")
    assert info.value.key == "name"
    assert not (tmp_path / "raw.h5ad").exists()


# --------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_with_fake_generator(monkeypatch, tmp_path):
    calls = []

    def generate(kind, n_cells, *, n_genes=2000, seed=0, world_seed=0, **options):
        calls.append((kind, n_cells, n_genes, seed, options))
        return _tiny_adata(n_obs=n_cells, n_vars=n_genes, seed=seed)

    fake = types.ModuleType("scjepa.data.synthetic")
    fake.generate = generate
    monkeypatch.setitem(sys.modules, "scjepa.data.synthetic", fake)
    dest = tmp_path / "syn" / "raw.h5ad"
    params = {"kind": "demo", "n_cells": 20, "n_genes": 15, "seed": 3, "noise": 0.5}
    prov = fetch({"source": "synthetic", "synthetic": params}, dest)
    assert calls == [("demo", 20, 15, 3, {"noise": 0.5})]
    assert prov["X_kind"] == "counts" and prov["x_kind"] == "counts" and prov["synthetic"] == params
    assert prov["sha256"] == sources.sha256_file(dest)
    a = ad.read_h5ad(dest)
    assert a.shape == (20, 15) and a.uns["scjepa_source"]["kind"] == "demo"


@pytest.mark.parametrize(
    "params, key",
    [(None, "synthetic"), ({"n_cells": 5}, "synthetic.kind"), ({"kind": "x"}, "synthetic.n_cells"),
     ({"kind": "x", "n_cells": 0}, "synthetic.n_cells")],
)
def test_synthetic_bad_params(params, key, tmp_path):
    with pytest.raises(InputError) as info:
        fetch({"source": "synthetic", "synthetic": params}, tmp_path / "raw.h5ad")
    assert info.value.key == key


def test_synthetic_real_generator(tmp_path):
    if importlib.util.find_spec("scjepa.data.synthetic") is None:
        pytest.skip("scjepa.data.synthetic is not written yet")
    synthetic = importlib.import_module("scjepa.data.synthetic")
    kinds = getattr(synthetic, "KINDS", None)
    kind = sorted(kinds)[0] if kinds else "pancreas"
    dest = tmp_path / "raw.h5ad"
    prov = fetch(
        {"source": "synthetic", "synthetic": {"kind": kind, "n_cells": 60, "n_genes": 50, "seed": 0}},
        dest,
    )
    a = ad.read_h5ad(dest)
    assert a.n_obs == 60 and prov["sha256"] == sources.sha256_file(dest)
    X = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    assert (X >= 0).all() and np.allclose(X, np.round(X))  # raw counts


# --------------------------------------------------------------------------------------------
# census (the network is not tested: a fake cellxgene_census module tests our logic)


def _fake_census(behaviour: str = "ok", with_progress_kw: bool = True):
    mod = types.ModuleType("cellxgene_census")
    mod.calls = []

    def download_source_h5ad(dataset_id, to_path, *, census_version="stable", **kw):
        mod.calls.append((dataset_id, to_path, census_version, kw))
        if Path(to_path).exists():  # the real function refuses to overwrite
            raise ValueError("Path exists - will not overwrite existing file.")
        if behaviour == "unknown":
            raise KeyError("Unknown dataset_id")
        if behaviour == "partial":
            Path(to_path).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
            raise OSError("connection reset")
        if behaviour == "garbage":
            Path(to_path).write_bytes(b"<Error>AccessDenied</Error>")
            return
        _tiny_adata().write_h5ad(to_path)

    if with_progress_kw:
        def wrapper(dataset_id, to_path, *, census_version="stable", progress_bar=True):
            return download_source_h5ad(dataset_id, to_path, census_version=census_version, progress_bar=progress_bar)
        mod.download_source_h5ad = wrapper
    else:
        def wrapper(dataset_id, to_path, *, census_version="stable"):
            return download_source_h5ad(dataset_id, to_path, census_version=census_version)
        mod.download_source_h5ad = wrapper
    return mod


@pytest.mark.parametrize("with_progress_kw", [True, False])
def test_census_download(monkeypatch, tmp_path, with_progress_kw):
    fake = _fake_census(with_progress_kw=with_progress_kw)
    monkeypatch.setitem(sys.modules, "cellxgene_census", fake)
    dest = tmp_path / "hlca" / "raw.h5ad"
    prov = fetch({"source": "census", "census_dataset_id": "abc-123"}, dest, progress=False)
    (dataset_id, to_path, version, kw) = fake.calls[0]
    assert dataset_id == "abc-123" and version == sources.DEFAULT_CENSUS_VERSION == "2023-05-15"
    assert kw == ({"progress_bar": False} if with_progress_kw else {})
    assert Path(to_path).parent.parent == dest.parent and Path(to_path) != dest
    assert prov["census_version"] == "2023-05-15" and prov["census_dataset_id"] == "abc-123"
    assert prov["origin"] == "cellxgene-census:abc-123@2023-05-15"
    assert prov["sha256"] == sources.sha256_file(dest)
    assert ad.read_h5ad(dest).n_obs == 40
    assert _leftovers(dest.parent) == ["raw.h5ad"]


def test_census_pinned_version_and_sha(monkeypatch, tmp_path):
    fake = _fake_census()
    monkeypatch.setitem(sys.modules, "cellxgene_census", fake)
    dest = tmp_path / "raw.h5ad"
    sha = sources.fetch_census("abc", "2025-01-30", dest, progress=False)
    assert fake.calls[0][2] == "2025-01-30"
    dest.unlink()
    with pytest.raises(ChecksumError, match=sha):
        fetch({"source": "census", "census_dataset_id": "abc", "sha256": "b" * 64}, dest, progress=False)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("behaviour, pattern", [("unknown", "Unknown dataset_id"), ("partial", "connection reset"), ("garbage", "not a readable h5ad")])
def test_census_failures_leave_nothing(monkeypatch, tmp_path, behaviour, pattern):
    monkeypatch.setitem(sys.modules, "cellxgene_census", _fake_census(behaviour))
    dest = tmp_path / "ds" / "raw.h5ad"
    with pytest.raises(DownloadError, match=pattern):
        sources.fetch_census("abc", "2023-05-15", dest, progress=False)
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_census_missing_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cellxgene_census", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'scjepa\[census\]'"):
        fetch({"source": "census", "census_dataset_id": "abc"}, tmp_path / "raw.h5ad")
    assert _leftovers(tmp_path) == []


def test_census_requires_dataset_id(tmp_path):
    with pytest.raises(InputError) as info:
        fetch({"source": "census"}, tmp_path / "raw.h5ad")
    assert info.value.key == "census_dataset_id"


# --------------------------------------------------------------------------------------------
# dispatcher


@pytest.mark.parametrize("spec", [{"source": "ftp"}, {}, {"source": None}])
def test_unknown_source(spec, tmp_path):
    with pytest.raises(InputError) as info:
        fetch(spec, tmp_path / "raw.h5ad")
    assert info.value.key == "source" and "key 'source'" in str(info.value)
    assert "census" in str(info.value)


def test_spec_must_be_mapping(tmp_path):
    with pytest.raises(InputError):
        fetch(["url"], tmp_path / "raw.h5ad")  # type: ignore[arg-type]
