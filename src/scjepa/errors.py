"""Errors that name what is wrong with the user's input (file, column, key)."""


class InputError(ValueError):
    """Bad input data or configuration.

    The message always names the offending file and, where relevant, the column or key, so a
    user can fix it without reading a traceback.
    """

    def __init__(self, message: str, *, path=None, column=None, key=None):
        parts = []
        if path is not None:
            parts.append(f"file '{path}'")
        if column is not None:
            parts.append(f"column '{column}'")
        if key is not None:
            parts.append(f"key '{key}'")
        prefix = (", ".join(parts) + ": ") if parts else ""
        super().__init__(prefix + message)
        self.path, self.column, self.key = path, column, key


class SolverError(RuntimeError):
    """A numerical solver (Sinkhorn, OT) did not converge or returned a degenerate result."""
