"""Per-rule logging: every thin script sends its logging, warnings and stderr to the rule's log.

One implementation for every script: :func:`start_rule_log` (process-wide, for scripts that may
write several records in one job) and :func:`rule_log` (the same as a context manager that also logs
an exception with its traceback before it propagates, so the rule's log names the failure and
Snakemake, which prints failed jobs' logs, shows it).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ACTIVE: dict = {}


def start_rule_log(path: str | Path | None, level: int = logging.INFO) -> logging.Logger:
    """Route logging, warnings and stderr (tqdm bars) of this process to ``path``.

    ``None`` logs to stderr only. Calling it again with the same path keeps the open log (a job that
    writes several records keeps one log); another path closes the previous one first.
    """
    log = logging.getLogger("scjepa")
    key = None if path is None else str(path)
    if _ACTIVE and _ACTIVE["key"] == key:
        return log
    stop_rule_log()
    root = logging.getLogger()
    root.setLevel(level)
    logging.captureWarnings(True)
    if path is None:
        handler = logging.StreamHandler()
        fh = old_err = None
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "w", buffering=1)
        old_err, sys.stderr = sys.stderr, fh
        handler = logging.StreamHandler(fh)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    _ACTIVE.update(key=key, handler=handler, fh=fh, old_err=old_err)
    # which accelerator the scheduler handed this job (SLURM sets it for --gpus jobs)
    log.info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
    return log


def stop_rule_log() -> None:
    """Undo :func:`start_rule_log` (restore stderr, close the file)."""
    if not _ACTIVE:
        return
    logging.getLogger().removeHandler(_ACTIVE["handler"])
    if _ACTIVE["fh"] is not None:
        sys.stderr = _ACTIVE["old_err"]
        _ACTIVE["fh"].close()
    _ACTIVE.clear()


@contextmanager
def rule_log(path: str | Path | None, level: int = logging.INFO):
    """:func:`start_rule_log` for the duration of a rule; an exception is logged before it propagates."""
    log = start_rule_log(path, level)
    try:
        yield log
    except BaseException:
        log.exception("rule failed")
        raise
    finally:
        stop_rule_log()
