"""Checksums recorded on first download ("trust on first use") for ``source: url`` datasets.

A dataset whose sha256 cannot be known before it is downloaded declares ``sha256: record`` in its
config entry. The first download computes the sha256 of the bytes received and records it in the
lock file :data:`DEFAULT_LOCK` (``resources/checksums.lock.yaml`` of the working directory, one
file for every dataset), keyed by dataset and URL. Every later download of the same dataset from
the same URL -- a re-run after ``raw.h5ad`` was deleted, a ``--forcerun``, a fresh copy of the
lock file in another working directory -- is checked against that record before anything lands,
and a mismatch raises :class:`RecordedChecksumError` naming the dataset, the URL, both hashes and
the lock file. To pin the value for good, copy it from the lock file into the config
(``sha256: <hex>``).

Lock file format (YAML; written atomically under an advisory lock, so parallel download jobs do
not lose each other's records)::

    # comment saying what the file is
    datasets:
      <dataset>:
        <url>: {sha256: <hex>, bytes: <size>, recorded: <UTC time, ISO 8601>}
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import yaml

from scjepa.data.sources import ChecksumError
from scjepa.errors import InputError

#: the config value of ``sha256`` that asks for a checksum recorded on first download
RECORD = "record"
#: where the records are kept, relative to the working directory (the workflow's ``-d``)
DEFAULT_LOCK = Path("resources") / "checksums.lock.yaml"

_HEADER = (
    "# sha256 of files downloaded for datasets configured with 'sha256: record', recorded on their first\n"
    "# download and checked on every later one (scjepa.data.checksums). Delete an entry only after\n"
    "# checking why the file changed.\n"
)


def is_record(value: Any) -> bool:
    """Whether a config ``sha256`` value asks for a checksum recorded on first download."""
    return isinstance(value, str) and value.strip().lower() == RECORD


class RecordedChecksumError(ChecksumError):
    """A download does not have the sha256 recorded on the dataset's first download."""


class ChecksumLock:
    """The lock file of recorded checksums (``path``; default :data:`DEFAULT_LOCK`)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else DEFAULT_LOCK

    def read(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every record: ``{dataset: {url: {sha256, bytes, recorded}}}`` (empty if no file)."""
        if not self.path.exists():
            return {}
        try:
            doc = yaml.safe_load(self.path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"is not valid YAML ({exc}); restore it or remove the damaged entry",
                             path=self.path) from None
        datasets = doc.get("datasets") if isinstance(doc, dict) else None
        if datasets is None:
            return {}
        if not isinstance(datasets, dict):
            raise InputError("its 'datasets' entry must be a mapping", path=self.path)
        return datasets

    def get(self, dataset: str, url: str) -> dict[str, Any] | None:
        """The record of ``dataset`` downloaded from ``url``, or None."""
        entry = (self.read().get(str(dataset)) or {}).get(str(url))
        return dict(entry) if isinstance(entry, dict) else None

    def record(self, dataset: str, url: str, sha256: str, n_bytes: int) -> dict[str, Any]:
        """Record the first download of ``dataset`` from ``url``; return the record.

        Re-reads the file under the lock, so a record another job wrote in the meantime is kept;
        if that other job recorded *this* dataset and URL with a different hash, raises
        :class:`RecordedChecksumError` instead of overwriting it.
        """
        with self._locked():
            datasets = self.read()
            entries = datasets.setdefault(str(dataset), {})
            old = entries.get(str(url))
            if isinstance(old, dict) and old.get("sha256"):
                if old["sha256"] != sha256:
                    raise RecordedChecksumError(mismatch_message(dataset, url, old, sha256, self.path))
                return dict(old)
            rec = {"sha256": str(sha256), "bytes": int(n_bytes),
                   "recorded": datetime.now(timezone.utc).replace(microsecond=0).isoformat()}
            entries[str(url)] = rec
            self._write(datasets)
            return rec

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flock_path = self.path.with_name(self.path.name + ".flock")
        with open(flock_path, "a+") as fh:
            try:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - not POSIX: the atomic rename still holds
                pass
            yield

    def _write(self, datasets: dict) -> None:
        from scjepa.io import write_text

        body = yaml.safe_dump({"datasets": datasets}, sort_keys=True, default_flow_style=False, width=1000)
        write_text(_HEADER + body, self.path)


def mismatch_message(dataset: str, url: str, recorded: dict, actual: str, lock_path) -> str:
    return (
        f"dataset '{dataset}': the file downloaded from {url} has sha256 {actual}, but its first download "
        f"recorded {recorded.get('sha256')} ({recorded.get('bytes')} bytes, {recorded.get('recorded')}) in "
        f"{lock_path}. The file on the server changed (or the download is not the same file); nothing was "
        f"kept. Check the source; if the new file is the one you want, delete the dataset's entry in "
        f"{lock_path} (or pin the new sha256 in the config) and run again."
    )
