"""Materialise ``resources/datasets/{dataset}/raw.h5ad`` from every kind of source.

The workflow's ``download_*`` rules call :func:`fetch` with the dataset's config entry. Each
source kind has its own function:

========== ======================================================= ==================================
source     spec keys                                               function
========== ======================================================= ==================================
url        ``url`` (http/https), ``sha256`` (hex, or ``record``),  :func:`fetch_url`
           ``format`` (``h5ad``, default, or ``10x_zip``)
census     ``census_dataset_id``, ``census_version`` (default      :func:`fetch_census`
           ``"2023-05-15"``, scTab's), ``sha256`` (optional)
local      ``path`` (an ``.h5ad``), ``sha256``, ``link`` (optional) :func:`fetch_local`
bundled    ``name`` (``"pbmc68k_reduced"``)                        :func:`fetch_bundled`
synthetic  ``synthetic``: ``{kind, n_cells, ...generator options}``  :func:`fetch_synthetic`
========== ======================================================= ==================================

Guarantees, for every source: the file is written under a temporary name in ``dest``'s folder
and renamed onto ``dest`` only once it is complete, its checksum (where one is given) matches and
it opens as an h5ad. An interrupted, truncated or mismatching download therefore never leaves
``dest`` (nor a temporary file) behind, so Snakemake never takes it as complete.

:func:`fetch` returns a provenance record (JSON-serialisable)::

    {"source": "url", "sha256": <of the written dest>, "bytes": <size>, "origin": <url / path /
     census id@version / package file / generator>, "X_kind": "as published" | "counts" |
     "log-normalised (not counts)", ...source-specific keys}

``sha256: record`` (url only) asks for the checksum to be recorded on the first download and checked on
every later one (:mod:`scjepa.data.checksums`; the lock file ``resources/checksums.lock.yaml`` of the
working directory); the record then says so in ``sha256_source``. ``format: 10x_zip`` downloads a zip of
10x matrix directories and converts it to an h5ad (:mod:`scjepa.data.tenx`); the checksum is that of
the zip as downloaded (``archive_sha256``), ``sha256`` that of the h5ad written.

``X_kind`` says in words what ``X`` holds: files from url/census/local are the source as
published (CELLxGENE h5ads keep raw counts in ``raw.X`` when ``X`` is normalised; the dataset's
config ``x_kind`` decides), synthetic data are counts, and the bundled ``pbmc68k_reduced`` is
already log-normalised (see :func:`fetch_bundled`). Where this module knows it, ``x_kind`` gives
the same in the preprocessing's vocabulary (``"counts"`` / ``"log1p_normalized"``,
``scjepa.data.preprocess.X_KINDS``). Files that this module writes itself (bundled, synthetic)
also carry both in ``uns["scjepa_source"]``.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import importlib.util
import inspect
import os
import shutil
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from scjepa.errors import InputError
from scjepa.io import atomic_path

#: Census LTS release pinned by default: the one scTab (and hence scJEPA) was built from.
DEFAULT_CENSUS_VERSION = "2023-05-15"

#: Where a Census release keeps its source h5ads, for downloading without ``cellxgene_census``
#: (``source: url``). The bucket differs between releases (early releases, 2023-05-15
#: included, used ``cellxgene-data-public``; later ones ``cellxgene-census-public-us-west-2``),
#: so the authoritative location is ``cellxgene_census.get_source_h5ad_uri(dataset_id,
#: census_version=...)["uri"]`` (an ``s3://`` URI, readable anonymously), turned into HTTPS as
#: ``s3://<bucket>/<key>`` -> ``https://<bucket>.s3.us-west-2.amazonaws.com/<key>``.
CENSUS_HTTPS_URL_PATTERNS = (
    "https://cellxgene-census-public-us-west-2.s3.us-west-2.amazonaws.com/cell-census/{census_version}/h5ads/{dataset_id}.h5ad",
    "https://cellxgene-data-public.s3.us-west-2.amazonaws.com/cell-census/{census_version}/h5ads/{dataset_id}.h5ad",
)

SOURCES = ("url", "census", "census_query", "local", "bundled", "synthetic")

#: Data sets that ship inside an installed package's files, so they need no network.
BUNDLED = {
    "pbmc68k_reduced": {
        "package": "scanpy",
        "file": ("datasets", "10x_pbmc68k_reduced.h5ad"),
        "X_kind": "log-normalised (not counts)",
        "x_kind": "log1p_normalized",
    },
}
#: Names people may expect under ``bundled`` but that the package downloads on first use.
_NOT_BUNDLED = {
    "pbmc3k": "scanpy.datasets.pbmc3k",
    "pbmc3k_processed": "scanpy.datasets.pbmc3k_processed",
    "paul15": "scanpy.datasets.paul15",
    "moignard15": "scanpy.datasets.moignard15",
    "burczynski06": "scanpy.datasets.burczynski06",
    "visium_sge": "scanpy.datasets.visium_sge",
}

_CHUNK = 1 << 20  # bytes per read
_PROGRESS_MIN_BYTES = 8 << 20  # show a progress bar from this size on (or when the size is unknown)
_BAD_H5AD_HINT = "is the URL an HTML page or an error message rather than the file?"


class DownloadError(RuntimeError):
    """A download failed (network, HTTP status, truncated body, unreadable file)."""


class ChecksumError(DownloadError):
    """The downloaded or copied bytes do not have the expected sha256 (``expected``, ``actual``)."""

    expected: str | None = None
    actual: str | None = None


class _ShortRead(OSError):
    """The server closed the connection before sending Content-Length bytes."""


# --------------------------------------------------------------------------------------------
# dispatcher


def fetch(spec: dict, dest: str | os.PathLike, *, progress: bool = True,
          lock: str | os.PathLike | None = None) -> dict[str, Any]:
    """Materialise the dataset described by ``spec`` (its config entry) at ``dest``.

    Returns the provenance record described in the module docstring. Raises
    :class:`~scjepa.errors.InputError` naming the key for a malformed spec; when ``spec`` carries
    the dataset's name under ``dataset`` (as the workflow passes it; ``name`` is the bundled
    source's own key), the key is the full config key (``datasets.<dataset>.path``). ``lock``: the
    lock file of checksums recorded on first download (``sha256: record``; default
    :data:`scjepa.data.checksums.DEFAULT_LOCK`, relative to the working directory).
    """
    try:
        return _fetch(spec, dest, progress=progress, lock=lock)
    except InputError as exc:
        if isinstance(spec, dict) and spec.get("dataset"):
            raise exc.for_dataset(str(spec["dataset"])) from None
        raise


def _fetch(spec: dict, dest: str | os.PathLike, *, progress: bool, lock=None) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise InputError(f"dataset entry must be a mapping, got {type(spec).__name__}")
    source = spec.get("source")
    if source not in SOURCES:
        raise InputError(
            f"unknown source {source!r}; expected one of {', '.join(SOURCES)}", key="source"
        )
    dest = Path(dest)
    record: dict[str, Any] = {"source": source}
    if source == "url":
        url = _require(spec, "url")
        fmt = str(spec.get("format") or "h5ad")
        if fmt not in URL_FORMATS:
            raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(URL_FORMATS)}", key="format")
        sha, how = _fetch_url_spec(spec, url, fmt, dest, progress=progress, lock=lock)
        record.update(origin=url, url=url, X_kind="as published", sha256_source=how)
        if fmt != "h5ad":
            record.update(format=fmt, archive_sha256=sha)
            sha = sha256_file(dest)
    elif source == "census_query":
        from scjepa.data.census_corpus import fetch_census_query

        version = str(spec.get("census_version") or DEFAULT_CENSUS_VERSION)
        query = fetch_census_query(spec.get("census_query") or {}, version, dest, progress=progress,
                                   ontology_path=spec.get("ontology_path"))
        sha = sha256_file(dest)
        record.update(origin=f"cellxgene-census query@{version}", census_version=version, query=query,
                      matrix="X", X_kind="counts (Census X raw)")
    elif source == "census" and spec.get("census_dataset_ids"):
        ids = [str(i) for i in spec["census_dataset_ids"]]
        version = str(spec.get("census_version") or DEFAULT_CENSUS_VERSION)
        sha, parts = fetch_census_concat(ids, version, dest, matrix=str(spec.get("matrix") or "X"), progress=progress)
        record.update(origin=f"cellxgene-census:{'+'.join(ids)}@{version}", census_dataset_ids=ids,
                      census_version=version, parts=parts, matrix="X", X_kind="counts of every part, concatenated")
    elif source == "census":
        dataset_id = _require(spec, "census_dataset_id")
        version = str(spec.get("census_version") or DEFAULT_CENSUS_VERSION)
        sha = fetch_census(dataset_id, version, dest, progress=progress, sha256=spec.get("sha256"))
        record.update(
            origin=f"cellxgene-census:{dataset_id}@{version}",
            census_dataset_id=dataset_id,
            census_version=version,
            X_kind="as published",
        )
    elif source == "local":
        path = _require(spec, "path")
        link = bool(spec.get("link", False))
        sha = fetch_local(path, dest, sha256=spec.get("sha256"), link=link)
        resolved = str(Path(path).expanduser().resolve())
        record.update(origin=resolved, path=resolved, linked=link)
        record["X_kind"] = "as published"
    elif source == "bundled":
        name = _require(spec, "name")
        sha = fetch_bundled(name, dest)
        info = _bundled_info(name)
        record.update(
            origin=info["origin"],
            bundled_name=name,  # not "name": that is the dataset's own name in the config
            package=info["package"],
            package_version=info["package_version"],
            source_file_sha256=info["source_file_sha256"],
            X_kind=info["X_kind"],
            x_kind=info["x_kind"],
        )
    else:  # synthetic
        params = _require(spec, "synthetic")
        if not isinstance(params, dict):
            raise InputError("must be a mapping {kind, n_cells, ...}", key="synthetic")
        sha = fetch_synthetic(params, dest)
        record.update(
            origin="scjepa.data.synthetic.generate",
            synthetic=dict(params),
            X_kind="counts",
            x_kind="counts",
        )
    record["sha256"] = sha
    record["bytes"] = dest.stat().st_size
    return record


#: what a ``source: url`` file is: an h5ad, or a zip of 10x matrix directories (scjepa.data.tenx)
URL_FORMATS = ("h5ad", "10x_zip")


def _fetch_url_spec(spec: dict, url: str, fmt: str, dest: Path, *, progress: bool, lock) -> tuple[str, str]:
    """Download a url source to ``dest`` (converting a 10x zip); return (sha256 of the downloaded
    bytes, how it was checked: "pinned in the config" / "recorded on first download" / "checked
    against the record of the first download" / "not checked")."""
    from scjepa.data.checksums import ChecksumLock, RecordedChecksumError, is_record, mismatch_message

    given = spec.get("sha256")
    dataset = str(spec.get("dataset") or url)
    lockfile = ChecksumLock(lock)
    recorded = lockfile.get(dataset, url) if is_record(given) else None
    expected = recorded["sha256"] if recorded else (None if is_record(given) else given)

    def download(target: Path) -> str:
        try:
            return fetch_url(url, expected, target, progress=progress)
        except ChecksumError as exc:
            if recorded:
                raise RecordedChecksumError(mismatch_message(dataset, url, recorded, exc.actual, lockfile.path)) from None
            raise

    if fmt == "h5ad":
        sha = download(dest)
        size = dest.stat().st_size
    else:  # the archive goes to a temporary file next to dest, then is converted onto dest
        from scjepa.data.tenx import convert_10x_zip

        archive = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.zip"
        try:
            sha = download(archive)
            size = archive.stat().st_size
            convert_10x_zip(archive, dest)
        finally:
            if archive.exists():
                archive.unlink()
    if is_record(given):
        if recorded:
            return sha, f"checked against the record of the first download in {lockfile.path}"
        lockfile.record(dataset, url, sha, size)
        return sha, f"recorded on first download in {lockfile.path}"
    return sha, ("pinned in the config" if given else "not checked (no sha256 given)")


def _require(spec: dict, key: str):
    value = spec.get(key)
    if value is None or value == "":
        raise InputError(f"required for source {spec.get('source')!r}", key=key)
    return value


# --------------------------------------------------------------------------------------------
# url


def fetch_url(
    url: str,
    sha256: str | None,
    dest: str | os.PathLike,
    *,
    progress: bool = True,
    retries: int = 2,
    timeout: float = 60,
    backoff: float = 2.0,
) -> str:
    """Download ``url`` to ``dest`` and return the sha256 of the written file.

    ``sha256`` (hex, optionally prefixed ``sha256:``) is checked before ``dest`` appears; a
    mismatch raises :class:`ChecksumError` giving expected and actual hashes and the URL, and
    is not retried (a complete body with the wrong hash means the pin or the file changed).
    Network errors, HTTP 5xx/408/429, stalls longer than ``timeout`` seconds (per socket
    operation) and bodies shorter than their ``Content-Length`` are retried ``retries`` times,
    waiting ``backoff * 2**attempt`` seconds in between, then raise :class:`DownloadError`.
    Other HTTP errors (404, 403, ...) fail at once. If ``dest`` ends in ``.h5ad`` the file must
    also open as HDF5 with ``X``/``obs``/``var``, which catches HTML pages served with status 200.

    Implementation note -- why urllib and not pooch: ``pooch.HTTPDownloader`` is a thin loop over
    ``requests.get(..., stream=True).iter_content()``. It detects a body cut short only because
    urllib3 >= 2 enforces Content-Length by default (requests still allows urllib3 1.x, which
    silently accepts the truncated body), it does not expose the response headers to check the
    length ourselves, and ``pooch.retrieve`` skips the download when the target exists and no
    hash is given. We need our own temp-file/rename, retry and length checks anyway, so the
    standard library with an explicit byte count against Content-Length is the smaller, fully
    deterministic choice (``http.client``'s ``read(n)`` returns ``b""`` on a premature close
    instead of raising, hence the explicit count).
    """
    parsed = urllib.parse.urlsplit(str(url))
    if parsed.scheme not in ("http", "https"):
        hint = ""
        if parsed.scheme == "s3":
            hint = (
                " For a public S3 object use https://<bucket>.s3.<region>.amazonaws.com/<key>;"
                " for CELLxGENE Census datasets use source: census."
            )
        elif parsed.scheme in ("", "file"):
            hint = " For a file on disk use source: local with path: ..."
        raise InputError(f"URL {url!r} must be http:// or https://.{hint}", key="url")
    expected = _normalise_sha256(sha256)
    retries = max(0, int(retries))
    dest = Path(dest)
    attempts = retries + 1
    last: BaseException | None = None
    for attempt in range(attempts):
        try:
            with atomic_path(dest) as tmp:
                actual = _download_once(url, tmp, progress=progress, timeout=timeout)
                if expected is not None and actual != expected:
                    exc = ChecksumError(
                        f"sha256 mismatch for {url}: expected {expected}, got {actual} "
                        f"({tmp.stat().st_size} bytes). The file was not kept at {dest}. Either "
                        "the pinned sha256 is wrong or the file on the server changed."
                    )
                    exc.expected, exc.actual = expected, actual
                    raise exc
                if dest.name.endswith(".h5ad"):
                    problem = _h5ad_problem(tmp)
                    if problem:
                        raise DownloadError(
                            f"{url} was downloaded but is not a readable h5ad ({problem}); "
                            f"{_BAD_H5AD_HINT}"
                        )
            return actual
        except urllib.error.HTTPError as exc:
            if not _retryable_status(exc.code):
                raise DownloadError(
                    f"HTTP {exc.code} {exc.reason} for {url}; check the dataset's url in the config"
                ) from None
            last = exc
        except DownloadError:
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            # URLError (refused, DNS), socket timeouts, resets, _ShortRead, IncompleteRead
            if isinstance(exc, OSError) and _is_local_disk_error(exc):
                raise
            last = exc
        if attempt + 1 < attempts and backoff > 0:
            time.sleep(backoff * 2**attempt)
    raise DownloadError(
        f"downloading {url} failed after {attempts} attempt(s): {_describe(last)}; "
        f"nothing was written to {dest}"
    ) from last


def _download_once(url: str, tmp: Path, *, progress: bool, timeout: float) -> str:
    """One GET of ``url`` into ``tmp``; return the sha256 of the bytes received."""
    request = urllib.request.Request(
        url, headers={"User-Agent": "scjepa-download", "Accept-Encoding": "identity"}
    )
    # A fresh opener per call so proxy environment variables are read now, not at import.
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=_ssl_context()))
    digest = hashlib.sha256()
    received = 0
    with opener.open(request, timeout=timeout) as response:
        total = _content_length(response)
        if total is not None:
            _check_free_space(tmp.parent, total, url)
        show = progress and (total is None or total >= _PROGRESS_MIN_BYTES)
        bar = _progress_bar(total, Path(urllib.parse.urlsplit(url).path).name or url, show)
        try:
            with open(tmp, "wb") as fh:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if total is not None and received != total:
        raise _ShortRead(
            f"connection closed after {received} of {total} bytes (Content-Length)"
        )
    return digest.hexdigest()


def _content_length(response) -> int | None:
    if (response.headers.get("Transfer-Encoding") or "").lower() == "chunked":
        return None  # http.client raises IncompleteRead itself on a broken chunked body
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _retryable_status(code: int) -> bool:
    return code >= 500 or code in (408, 429)


def _is_local_disk_error(exc: OSError) -> bool:
    import errno

    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason}"
    if isinstance(exc, _ShortRead):
        return f"short read, {exc}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _ssl_context() -> ssl.SSLContext:
    """System trust store (honours SSL_CERT_FILE/SSL_CERT_DIR); certifi only if that is empty."""
    ctx = ssl.create_default_context()
    if not ctx.cert_store_stats().get("x509_ca"):
        try:
            import certifi

            ctx.load_verify_locations(certifi.where())
        except ImportError:  # pragma: no cover - certifi comes with requests
            pass
    return ctx


def _check_free_space(folder: Path, need: int, url: str) -> None:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:  # pragma: no cover
        return
    if need > free:
        raise DownloadError(
            f"{url} is {need / 1e9:.2f} GB but only {free / 1e9:.2f} GB are free in {folder}"
        )


def _progress_bar(total: int | None, name: str, show: bool):
    if not show:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr)


# --------------------------------------------------------------------------------------------
# census


def fetch_census(
    dataset_id: str,
    census_version: str,
    dest: str | os.PathLike,
    *,
    progress: bool = True,
    sha256: str | None = None,
) -> str:
    """Download a CELLxGENE dataset's source h5ad from a pinned Census release; return its sha256.

    Uses ``cellxgene_census.download_source_h5ad(dataset_id, to_path, census_version=...)``
    (the optional extra: ``pip install 'scjepa[census]'``), which resolves the dataset through the
    release's ``census_info/datasets`` table and copies the anonymous S3 object. It refuses to
    write onto an existing path, so it writes into a fresh temporary folder next to ``dest``; the
    file is renamed onto ``dest`` only after it opens as an h5ad (and matches ``sha256`` if given).

    Without the package, the same file can be fetched with ``source: url``: resolve the location
    with ``cellxgene_census.get_source_h5ad_uri`` elsewhere, or use one of
    :data:`CENSUS_HTTPS_URL_PATTERNS` (the bucket depends on the release), pinning its sha256.
    """
    if not dataset_id:
        raise InputError("a CELLxGENE dataset id is required", key="census_dataset_id")
    census_version = str(census_version or DEFAULT_CENSUS_VERSION)
    expected = _normalise_sha256(sha256)
    try:
        census = importlib.import_module("cellxgene_census")
    except ImportError as exc:
        hint = CENSUS_HTTPS_URL_PATTERNS[0].format(
            census_version=census_version, dataset_id=dataset_id
        )
        raise ImportError(
            "source: census needs the cellxgene-census package: install with "
            "pip install 'scjepa[census]'. Alternatively use source: url with the release's "
            f"HTTPS location (e.g. {hint}; check the bucket for release {census_version}) "
            "and its sha256."
        ) from exc

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    locate = getattr(census, "get_source_h5ad_uri", None)
    if locate is not None:
        # the release's locator names the file; our downloader fetches it over HTTPS (retries, length and
        # checksum checks, nothing left behind on failure): no s3fs needed
        origin = f"dataset {dataset_id} of CELLxGENE Census {census_version}"
        try:
            locator = locate(dataset_id, census_version=census_version)
        except Exception as exc:
            raise DownloadError(f"cellxgene_census could not locate {origin} ({type(exc).__name__}: {exc}); "
                                "check census_dataset_id and census_version") from exc
        return fetch_url(census_https_url(locator["uri"], locator.get("s3_region")), expected, dest,
                         progress=progress)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".census.tmp", dir=dest.parent))
    try:
        tmp = tmpdir / dest.name  # must not exist: download_source_h5ad will not overwrite
        kwargs: dict[str, Any] = {"census_version": census_version}
        if _accepts(census.download_source_h5ad, "progress_bar"):
            kwargs["progress_bar"] = progress
        origin = f"dataset {dataset_id} of CELLxGENE Census {census_version}"
        try:
            census.download_source_h5ad(dataset_id, to_path=str(tmp), **kwargs)
        except Exception as exc:
            raise DownloadError(
                f"cellxgene_census could not download {origin} "
                f"({type(exc).__name__}: {exc}); check census_dataset_id and census_version"
            ) from exc
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise DownloadError(f"cellxgene_census wrote no file for {origin}")
        actual = sha256_file(tmp)
        if expected is not None and actual != expected:
            raise ChecksumError(
                f"sha256 mismatch for {origin}: expected {expected}, got {actual}; "
                f"the file was not kept at {dest}"
            )
        problem = _h5ad_problem(tmp)
        if problem:
            raise DownloadError(f"{origin} downloaded but is not a readable h5ad ({problem})")
        os.replace(tmp, dest)
        return actual
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _accepts(func, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def census_https_url(uri: str, region: str | None = None) -> str:
    """A Census locator's ``s3://<bucket>/<key>`` as ``https://<bucket>.s3.<region>.amazonaws.com/<key>``
    (the public buckets are readable anonymously over HTTPS); an http(s) URI is returned as it is."""
    parsed = urllib.parse.urlsplit(str(uri))
    if parsed.scheme in ("http", "https"):
        return str(uri)
    if parsed.scheme != "s3":
        raise DownloadError(f"the Census locator gave {uri!r}, neither s3:// nor http(s)://")
    return f"https://{parsed.netloc}.s3.{region or 'us-west-2'}.amazonaws.com{parsed.path}"


def fetch_census_concat(dataset_ids, census_version: str, dest: str | os.PathLike, *, matrix: str = "X",
                        progress: bool = True) -> tuple[str, list[dict]]:
    """Several Census datasets as one h5ad (``census_dataset_ids``; Fig. 2's lung studies, study = batch).

    Each source h5ad is fetched by :func:`fetch_census` next to ``dest``, its counts taken from ``matrix``
    (``raw.X`` for CELLxGENE files), its cells named ``<dataset_id>:<obs_name>`` and tagged with obs
    ``dataset_id``; the genes all parts share (by var name, Ensembl ids in CELLxGENE files) are kept, in the
    first part's order. The result holds the counts in ``X`` (the provenance says ``matrix: X``). Returns
    (sha256 of dest, one record per part with its id, sha256, cells and genes).
    """
    import anndata as ad

    from scjepa.io import read_h5ad, write_h5ad

    dest = Path(dest)
    parts, records = [], []
    for ds_id in dataset_ids:
        part_path = dest.parent / f".{dest.name}.part-{ds_id}.h5ad"
        try:
            sha = fetch_census(ds_id, census_version, part_path, progress=progress)
            a = read_h5ad(part_path)
        finally:
            if part_path.exists():
                part_path.unlink()
        if matrix == "raw.X":
            if a.raw is None:
                raise InputError(f"CELLxGENE dataset {ds_id} has no raw.X", key="matrix")
            var = a.var.reindex(a.raw.var_names) if a.raw.var_names.isin(a.var_names).all() else a.raw.var.copy()
            a = ad.AnnData(X=a.raw.X, obs=a.obs, var=var)
        elif matrix.startswith("layers/"):
            a = ad.AnnData(X=a.layers[matrix.split("/", 1)[1]], obs=a.obs, var=a.var)
        else:
            a = ad.AnnData(X=a.X, obs=a.obs, var=a.var)
        if "dataset_id" not in a.obs:
            a.obs["dataset_id"] = ds_id
        a.obs_names = [f"{ds_id}:{n}" for n in a.obs_names]
        records.append({"census_dataset_id": ds_id, "sha256": sha, "n_cells": int(a.n_obs), "n_genes": int(a.n_vars)})
        parts.append(a)
    shared = parts[0].var_names
    for a in parts[1:]:
        shared = shared[shared.isin(a.var_names)]
    if len(shared) == 0:
        raise InputError(f"the datasets {list(dataset_ids)} share no gene (var names)", key="census_dataset_ids")
    merged = ad.concat([a[:, shared] for a in parts], join="inner", merge="first")
    merged.var = parts[0].var.loc[shared].copy()
    for col in merged.obs.columns:  # categories of the parts differ; keep strings as categoricals
        if merged.obs[col].dtype == object:
            merged.obs[col] = merged.obs[col].astype(str).astype("category")
    write_h5ad(merged, dest)
    return sha256_file(dest), records


# --------------------------------------------------------------------------------------------
# local


def fetch_local(
    path: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    link: bool = False,
) -> str:
    """Copy (or, with ``link=True``, hard-link) a local ``.h5ad`` to ``dest``; return its sha256.

    The source must exist, end in ``.h5ad`` and open as an h5ad (read backed, so without loading
    ``X``); otherwise an :class:`~scjepa.errors.InputError` names it. ``sha256`` is checked on the
    bytes placed at ``dest``. A hard link shares the user's file (later edits to it show through),
    and falls back to a copy when the two paths are on different file systems.
    """
    src = Path(path).expanduser()
    if not src.name.endswith(".h5ad"):
        raise InputError("a local source must be an .h5ad file", path=src, key="path")
    if not src.is_file():
        raise InputError("does not exist or is not a file", path=src, key="path")
    expected = _normalise_sha256(sha256)
    _open_h5ad_or_raise(src)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.resolve() == dest.resolve():
        raise InputError("the local source is the destination itself", path=src, key="path")

    def _verify(tmp: Path) -> str:
        actual = sha256_file(tmp)
        if expected is not None and actual != expected:
            raise ChecksumError(
                f"sha256 mismatch for local file {src}: expected {expected}, got {actual}; "
                f"nothing was written to {dest}"
            )
        return actual

    if link:
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex}.tmp"
        try:
            os.link(src, tmp)
        except OSError:
            tmp = None  # different file system, or links unsupported: copy instead
        if tmp is not None:
            try:
                actual = _verify(tmp)
                os.replace(tmp, dest)
                return actual
            finally:
                if tmp.exists():
                    tmp.unlink()
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
        actual = _verify(tmp)
    return actual


def _open_h5ad_or_raise(path: Path) -> None:
    from scjepa.io import read_h5ad

    adata = read_h5ad(path, backed="r")  # InputError naming the file if unreadable
    try:
        adata.file.close()
    except Exception:  # pragma: no cover
        pass


# --------------------------------------------------------------------------------------------
# bundled


def fetch_bundled(name: str, dest: str | os.PathLike) -> str:
    """Write a data set shipped inside an installed package to ``dest``; return its sha256.

    Only files on disk in the installed package are used, never the network. Supported:

    ``pbmc68k_reduced`` (scanpy's ``datasets/10x_pbmc68k_reduced.h5ad``; 700 cells x 765
    genes, gene symbols as var_names, labels in ``obs["bulk_labels"]`` (10 PBMC types), one
    donor). **It holds no counts**: the shipped ``X`` is scaled (z-scored, negative values) and
    ``.raw.X`` is log1p of library-size-normalised expression of the same 765 genes. We write
    ``X = raw.X`` (log-normalised, CSR float32), keep the shipped scaled matrix in
    ``layers["scaled"]``, drop ``.raw`` and record ``uns["scjepa_source"]["X_kind"] =
    "log-normalised (not counts)"`` and ``x_kind = "log1p_normalized"`` (also in the provenance
    record), so the preprocessing knows not to normalise again and that counts cannot be
    reconstructed (the library sizes were computed over all genes before the 765 were kept, with
    scanpy's old ``normalize_per_cell``; the target sum is not recorded in the file). Configure
    the dataset with ``x_kind: log1p_normalized``.

    Scanpy's ``pbmc3k``, ``pbmc3k_processed``, ``paul15``, ... are downloaded by scanpy on first
    use, so they are not offered here; the error says so.
    """
    if name not in BUNDLED:
        if name in _NOT_BUNDLED:
            raise InputError(
                f"{_NOT_BUNDLED[name]}() is not shipped with the package: scanpy downloads it on "
                "first use, which needs network. Use source: url (with its sha256) or "
                f"source: local instead. Bundled data sets: {', '.join(BUNDLED)}",
                key="name",
            )
        raise InputError(
            f"unknown bundled data set {name!r}; available: {', '.join(BUNDLED)}", key="name"
        )
    info = _bundled_info(name)
    src = Path(info["path"])
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    import warnings

    with warnings.catch_warnings():  # the shipped file is in an old anndata format
        warnings.simplefilter("ignore")
        adata = ad.read_h5ad(src)
    if name == "pbmc68k_reduced":
        if adata.raw is None:  # pragma: no cover - guards against a changed scanpy file
            raise InputError("expected .raw (log-normalised values) in the bundled file", path=src)
        raw = adata.raw
        if list(raw.var_names) != list(adata.var_names):  # pragma: no cover
            raise InputError("bundled file's .raw genes differ from X's genes", path=src)
        scaled = np.asarray(adata.X, dtype=np.float32)
        adata.X = sp.csr_matrix(raw.X, dtype=np.float32)
        adata.layers["scaled"] = scaled
        adata.raw = None
    adata.uns["scjepa_source"] = {
        "source": "bundled",
        "name": name,
        "X_kind": info["X_kind"],
        "x_kind": info["x_kind"],
        "origin": info["origin"],
        "package_version": info["package_version"],
        "source_file_sha256": info["source_file_sha256"],
    }
    from scjepa.io import write_h5ad

    write_h5ad(adata, dest)
    return sha256_file(dest)


def _bundled_info(name: str) -> dict[str, Any]:
    entry = BUNDLED[name]
    package = entry["package"]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"bundled data set {name!r} needs the {package} package", key="name")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*entry["file"])
    if not path.is_file():
        raise InputError(
            f"bundled data set {name!r} is not in this {package} installation", path=path
        )
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg_version = version(package)
    except PackageNotFoundError:  # pragma: no cover
        pkg_version = "unknown"
    return {
        "path": str(path),
        "package": package,
        "package_version": pkg_version,
        "origin": f"{package}=={pkg_version}:{'/'.join(entry['file'])}",
        "source_file_sha256": sha256_file(path),
        "X_kind": entry["X_kind"],
        "x_kind": entry["x_kind"],
    }


# --------------------------------------------------------------------------------------------
# synthetic


def generate_synthetic(params: dict):
    """The AnnData (raw counts) of a config's ``synthetic:`` mapping: ``kind`` and ``n_cells`` (required) and
    any further generator options (``n_genes``, ``seed``, ``world_seed``, ``options``, ...), passed on to
    ``scjepa.data.synthetic.generate(kind, n_cells, **rest)``; errors name the config key."""
    if not isinstance(params, dict):
        raise InputError("must be a mapping {kind, n_cells, ...}", key="synthetic")
    rest = dict(params)
    kind = rest.pop("kind", None)
    n_cells = rest.pop("n_cells", None)
    if not kind:
        raise InputError("required", key="synthetic.kind")
    if n_cells is None:
        raise InputError("required", key="synthetic.n_cells")
    try:
        n_cells = int(n_cells)
    except (TypeError, ValueError):
        raise InputError(f"must be an integer, got {n_cells!r}", key="synthetic.n_cells") from None
    if n_cells <= 0:
        raise InputError(f"must be positive, got {n_cells}", key="synthetic.n_cells")
    synthetic = importlib.import_module("scjepa.data.synthetic")  # lazy: heavy and optional here
    return synthetic.generate(kind, n_cells, **rest)


def fetch_synthetic(params: dict, dest: str | os.PathLike) -> str:
    """Generate a synthetic data set (raw counts, :func:`generate_synthetic`) and write it to ``dest``; return
    its sha256."""
    adata = generate_synthetic(params)
    adata.uns["scjepa_source"] = {
        "source": "synthetic",
        "kind": str(params["kind"]),
        "X_kind": "counts",
        "x_kind": "counts",
    }
    from scjepa.io import write_h5ad

    write_h5ad(adata, dest)
    return sha256_file(dest)


# --------------------------------------------------------------------------------------------
# fingerprints: a local source is tracked by its content, not its modification time


def file_fingerprint(path: str | os.PathLike, cache: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"path", "bytes", "sha256"}`` of a user's file: what a rerun decision should depend on.

    The workflow puts this in the parameters of a local dataset's jobs, so a file edited in place
    (new content) reruns them and a file merely touched (same bytes, new mtime) does not. Hashing a
    large file is paid once per change: ``cache`` (a JSON file) maps (path, size, mtime, inode) to
    the digest computed last time. Raises InputError naming the file when it is missing.
    """
    import json

    src = Path(path).expanduser()
    if not src.is_file():
        raise InputError("does not exist or is not a file", path=src, key="path")
    st = src.stat()
    resolved = str(src.resolve())
    stamp = f"{resolved}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    table: dict[str, str] = {}
    if cache is not None and Path(cache).is_file():
        try:
            table = json.loads(Path(cache).read_text())
        except (OSError, ValueError):
            table = {}  # a damaged cache only costs a re-hash
    digest = table.get(stamp)
    if digest is None:
        if st.st_size > (1 << 30):
            print(f"fingerprinting {src} ({st.st_size / 2**30:.1f} GiB) once: sha256 of its content",
                  file=sys.stderr)
        digest = sha256_file(src)
        if cache is not None:
            table = {k: v for k, v in table.items() if not k.startswith(resolved + "|")}
            table[stamp] = digest
            from scjepa.io import write_text

            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            write_text(json.dumps(table, indent=1, sort_keys=True), cache)
    return {"path": resolved, "bytes": int(st.st_size), "sha256": digest}


# --------------------------------------------------------------------------------------------
# helpers


def sha256_file(path: str | os.PathLike, *, chunk: int = _CHUNK) -> str:
    """Hex sha256 of a file, read in chunks (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def _normalise_sha256(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text == "record":
        raise InputError("'record' (checksum recorded on first download) is only for source: url", key="sha256")
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise InputError(f"not a sha256 hex digest: {value!r}", key="sha256")
    return text


def _h5ad_problem(path: Path) -> str | None:
    """Cheap structural check (bounded memory, unlike reading obs): None if it looks like an h5ad."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            missing = [k for k in ("X", "obs", "var") if k not in fh]
    except Exception as exc:  # h5py raises OSError and others for non-HDF5 / truncated files
        return f"{type(exc).__name__}: {exc}"
    if missing:
        return f"HDF5 file without {', '.join(missing)}"
    return None


# --------------------------------------------------------------------------------------------
# the Cell Ontology (hierarchy-corrected F1, scjepa.ontology)

#: Cell Ontology release pinned for scTab-style hierarchy-corrected F1. scTab took its hierarchy
#: from Ubergraph's live Cell Ontology in 2023 and recorded no version; 2023-07-20 is the release
#: CELLxGENE's schema 4.0.0 pins, the first pinned release after the Census 2023-05-15 data scTab
#: was built from, so every cell-type term of that data is in it.
CELL_ONTOLOGY_VERSION = "2023-07-20"
#: The release's OBO edition, attached to the GitHub release of obophenotype/cell-ontology.
CELL_ONTOLOGY_URL = "https://github.com/obophenotype/cell-ontology/releases/download/v{version}/cl.obo"
#: sha256 of ``cl.obo`` per release, where recorded. A release not listed here is checked against
#: nothing on its first download; the provenance record returns the hash of what arrived, to pin
#: (``sha256=``) from then on.
CELL_ONTOLOGY_SHA256: dict[str, str] = {}


def fetch_cell_ontology(
    dest: str | os.PathLike,
    *,
    version: str = CELL_ONTOLOGY_VERSION,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    **download: Any,
) -> dict[str, Any]:
    """Download a pinned Cell Ontology release (``cl.obo``) to ``dest``; return its provenance record.

    ``url`` defaults to :data:`CELL_ONTOLOGY_URL` at ``version``; ``sha256`` to the release's entry in
    :data:`CELL_ONTOLOGY_SHA256`. The bytes go through :func:`fetch_url` (retries, Content-Length
    and checksum checks, nothing left behind on failure; ``download`` passes ``retries``, ``timeout``,
    ``backoff`` on) and must then look like that release's OBO file -- a ``format-version`` header,
    and a ``data-version`` header, where present, that names ``version`` -- before they are renamed
    onto ``dest``. An HTML error page or another release therefore never lands.

    Record: ``{"source": "url", "origin": url, "url": url, "cl_version": version, "data_version":
    <the file's header>, "sha256": <of dest>, "bytes": <size>}``.
    """
    url = url or CELL_ONTOLOGY_URL.format(version=version)
    expected = sha256 or CELL_ONTOLOGY_SHA256.get(version)
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        sha = fetch_url(url, expected, tmp, progress=progress, **download)
        data_version, problem = _obo_header(tmp, version)
        if problem:
            raise DownloadError(f"{url} was downloaded but {problem}; nothing was written to {dest}")
    return {"source": "url", "origin": url, "url": url, "cl_version": version, "data_version": data_version,
            "sha256": sha, "bytes": dest.stat().st_size}


def _obo_header(path: Path, version: str) -> tuple[str | None, str | None]:
    """(data-version, problem) from an OBO file's header stanza; problem is None when it fits."""
    header: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("["):  # the header ends at the first blank line / stanza
                break
            tag, sep, value = line.partition(":")
            if sep:
                header.setdefault(tag.strip(), value.strip())
    if "format-version" not in header:
        return None, "is not an OBO file (no format-version header; an HTML page?)"
    data_version = header.get("data-version")
    if data_version is not None and version not in data_version:
        return data_version, f"is release '{data_version}', not the pinned {version}"
    return data_version, None


def fetch_rule(rule) -> dict:
    """The data rules' entry point (``download_*``, ``link_local_h5ad``, ``extract_bundled_h5ad``,
    ``generate_synthetic``): ``params.spec`` (the dataset's entry, its name under ``dataset``) ->
    ``output.raw`` and ``output.provenance`` (JSON: the dataset's name, then :func:`fetch`'s record)."""
    import logging

    from scjepa.io import write_json

    spec = dict(rule.params["spec"])
    logging.getLogger(__name__).info("fetching dataset %s from source %s", spec["dataset"], spec["source"])
    if rule.input.get("ontology"):  # census_query: the Cell Ontology its type filters read
        spec["ontology_path"] = rule.input["ontology"]
    provenance = fetch(spec, rule.output["raw"])
    write_json({"dataset": spec["dataset"], **provenance}, rule.output["provenance"])
    return provenance
