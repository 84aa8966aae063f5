"""Checksums recorded on first download (``sha256: record``) and the 10x-zip url format, against a
loopback HTTP server serving bytes the test can change between downloads."""

from __future__ import annotations

import http.server
import io
import threading
import zipfile

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from scjepa.data import checksums
from scjepa.data.checksums import ChecksumLock, RecordedChecksumError
from scjepa.data.sources import ChecksumError, fetch
from scjepa.errors import InputError


class _Files:
    """A loopback server of ``files`` (path -> bytes); change an entry to change what is served."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        files = self.files

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                data = files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture(scope="module")
def server():
    s = _Files()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _h5ad_bytes(tmp_path, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (30, 12)).astype(np.float32)))
    a.obs_names = [f"c{i}" for i in range(30)]
    a.var_names = [f"g{j}" for j in range(12)]
    path = tmp_path / f"x{seed}.h5ad"
    a.write_h5ad(path)
    return path.read_bytes()


def _spec(server, name="file.h5ad", **extra):
    return {"dataset": "ds", "source": "url", "url": f"{server.base}/{name}", "sha256": "record", **extra}


def test_first_download_records_later_ones_are_checked(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default lock file is relative to the working directory
    server.files["/file.h5ad"] = first = _h5ad_bytes(tmp_path, 0)
    rec = fetch(_spec(server), tmp_path / "a" / "raw.h5ad", progress=False)
    lock = tmp_path / checksums.DEFAULT_LOCK
    doc = yaml.safe_load(lock.read_text())
    entry = doc["datasets"]["ds"][f"{server.base}/file.h5ad"]
    assert entry["sha256"] == rec["sha256"] and entry["bytes"] == len(first)
    assert rec["sha256_source"].startswith("recorded on first download")

    # the same bytes again (a re-fetch): checked against the record, passes
    rec2 = fetch(_spec(server), tmp_path / "b" / "raw.h5ad", progress=False)
    assert rec2["sha256"] == rec["sha256"]
    assert rec2["sha256_source"].startswith("checked against the record")

    # changed bytes: fails naming dataset, url, both hashes and the lock file; nothing lands
    server.files["/file.h5ad"] = changed = _h5ad_bytes(tmp_path, 1)
    dest = tmp_path / "c" / "raw.h5ad"
    with pytest.raises(RecordedChecksumError) as err:
        fetch(_spec(server), dest, progress=False)
    msg = str(err.value)
    import hashlib

    assert "dataset 'ds'" in msg and f"{server.base}/file.h5ad" in msg and str(checksums.DEFAULT_LOCK) in msg
    assert rec["sha256"] in msg and hashlib.sha256(changed).hexdigest() in msg
    assert isinstance(err.value, ChecksumError)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    assert yaml.safe_load(lock.read_text()) == doc  # the record is not overwritten


def test_records_are_per_dataset_and_url(server, tmp_path):
    lock = tmp_path / "lock.yaml"
    server.files["/one.h5ad"] = _h5ad_bytes(tmp_path, 2)
    server.files["/two.h5ad"] = _h5ad_bytes(tmp_path, 3)
    fetch(_spec(server, "one.h5ad"), tmp_path / "1.h5ad", progress=False, lock=lock)
    fetch(_spec(server, "two.h5ad", dataset="other"), tmp_path / "2.h5ad", progress=False, lock=lock)
    recs = ChecksumLock(lock).read()
    assert set(recs) == {"ds", "other"}
    assert list(recs["ds"]) == [f"{server.base}/one.h5ad"]


def test_a_conflicting_record_is_never_overwritten(tmp_path):
    lock = ChecksumLock(tmp_path / "lock.yaml")
    lock.record("ds", "http://x/f", "a" * 64, 10)
    assert lock.record("ds", "http://x/f", "a" * 64, 10)["sha256"] == "a" * 64
    with pytest.raises(RecordedChecksumError, match="dataset 'ds'"):
        lock.record("ds", "http://x/f", "b" * 64, 10)


def test_record_only_for_url_sources(tmp_path):
    src = tmp_path / "f.h5ad"
    src.write_bytes(b"x")
    with pytest.raises(InputError, match="only for source: url"):
        fetch({"source": "local", "path": str(src), "sha256": "record"}, tmp_path / "o.h5ad")


def test_pinned_sha_still_reports_how(server, tmp_path):
    import hashlib

    server.files["/pinned.h5ad"] = data = _h5ad_bytes(tmp_path, 4)
    rec = fetch(_spec(server, "pinned.h5ad", sha256=hashlib.sha256(data).hexdigest()), tmp_path / "p.h5ad",
                progress=False, lock=tmp_path / "lock.yaml")
    assert rec["sha256_source"] == "pinned in the config"
    assert not (tmp_path / "lock.yaml").exists()


# ---- format: 10x_zip ----------------------------------------------------------------------------


def tenx_zip(samples: dict[str, np.ndarray], genes, *, nested: bool = False, gz: bool = False) -> bytes:
    """A zip of 10x (Cell Ranger v2) directories: <sample>/matrix.mtx, genes.tsv, barcodes.tsv."""
    import gzip

    from scipy.io import mmwrite

    def pack(zf, prefix):
        for name, counts in samples.items():
            buf = io.BytesIO()
            mmwrite(buf, sp.coo_matrix(counts.T.astype(np.int64)))
            files = {"matrix.mtx": buf.getvalue(),
                     "genes.tsv": "".join(f"{g}\tSYM{g[-3:]}\n" for g in genes).encode(),
                     "barcodes.tsv": "".join(f"{name}BC{i:04d}-1\n" for i in range(len(counts))).encode()}
            for fname, data in files.items():
                if gz:
                    fname, data = fname + ".gz", gzip.compress(data)
                zf.writestr(f"{prefix}{name}/{fname}", data)

    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        pack(zf, "scRNAseq/")
        zf.writestr("__MACOSX/scRNAseq/._T0", b"junk")
    if not nested:
        return inner.getvalue()
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w") as zf:
        zf.writestr("scRNAseq.zip", inner.getvalue())
        zf.writestr("README.txt", b"embryoid body data")
    return outer.getvalue()


@pytest.mark.parametrize("nested,gz", [(False, False), (True, True)])
def test_10x_zip_is_converted_with_samples(server, tmp_path, nested, gz):
    rng = np.random.default_rng(0)
    genes = [f"ENSG{i:011d}" for i in range(15)]
    samples = {"T2_3B": rng.poisson(1.0, (7, 15)), "T0_1A": rng.poisson(1.0, (5, 15))}
    server.files["/eb.zip"] = tenx_zip(samples, genes, nested=nested, gz=gz)
    dest = tmp_path / "raw.h5ad"
    rec = fetch(_spec(server, "eb.zip", format="10x_zip"), dest, progress=False, lock=tmp_path / "lock.yaml")
    a = ad.read_h5ad(dest)
    assert a.shape == (12, 15)
    assert list(a.obs["sample"].cat.categories) == ["T0_1A", "T2_3B"]
    assert (a.obs["sample"] == "T0_1A").sum() == 5 and a.obs_names[0].startswith("T0_1A_")
    assert list(a.var_names) == genes and a.var["feature_name"].iloc[0] == "SYM000"
    np.testing.assert_array_equal(a.X[:5].toarray(), samples["T0_1A"])
    assert rec["format"] == "10x_zip" and rec["archive_sha256"] != rec["sha256"]
    # the recorded checksum is the archive's
    entry = ChecksumLock(tmp_path / "lock.yaml").get("ds", f"{server.base}/eb.zip")
    assert entry["sha256"] == rec["archive_sha256"]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".zip"]


def test_10x_zip_without_matrices_is_an_error(server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", b"nothing here")
    server.files["/empty.zip"] = buf.getvalue()
    with pytest.raises(InputError, match="no 10x matrix directory"):
        fetch(_spec(server, "empty.zip", format="10x_zip"), tmp_path / "raw.h5ad", progress=False,
              lock=tmp_path / "lock.yaml")
    assert not (tmp_path / "raw.h5ad").exists()


def test_unknown_url_format(server, tmp_path):
    with pytest.raises(InputError, match="unknown format"):
        fetch(_spec(server, format="loom"), tmp_path / "raw.h5ad")
