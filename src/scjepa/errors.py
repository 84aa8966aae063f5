"""Errors that name what is wrong with the user's input (file, column, key)."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input data or configuration.

    The message always names the offending file and, where relevant, the column or key, so a
    user can fix it without reading a traceback.
    """

    def __init__(self, message: str, *, path=None, column=None, key=None):
        self.detail = message
        self.path, self.column, self.key = path, column, key
        parts = []
        if path is not None:
            parts.append(f"file '{path}'")
        if column is not None:
            parts.append(f"column '{column}'")
        if key is not None:
            parts.append(f"key '{key}'")
        prefix = (", ".join(parts) + ": ") if parts else ""
        super().__init__(prefix + message)

    def for_dataset(self, dataset: str, *, copies: dict | None = None) -> "InputError":
        """The same error, as the user's config and files name things.

        A bare key (``path``, ``matrix``) becomes ``datasets.<dataset>.<key>``, no key the entry
        ``datasets.<dataset>``; a path in ``copies``
        (the workflow's copy of a user's file -> the user's file) is replaced by the user's file,
        with the copy named after it, so the message points at the file the user can fix.
        """
        key = self.key
        if key is None:
            key = f"datasets.{dataset}"  # at least the config entry the error is about
        elif not str(key).startswith(("datasets.", "<")):
            key = f"datasets.{dataset}.{key}"
        path, detail = self.path, self.detail
        for copy, original in (copies or {}).items():
            if path is not None and _same(path, copy):
                path = original
                detail = f"{detail} (read from its copy {copy})"
                break
        return InputError(detail, path=path, column=self.column, key=key)


def _same(a, b) -> bool:
    try:
        return os.path.abspath(os.fspath(a)) == os.path.abspath(os.fspath(b))
    except TypeError:
        return False


class SolverError(RuntimeError):
    """A numerical solver (Sinkhorn, OT) did not converge or returned a degenerate result."""
