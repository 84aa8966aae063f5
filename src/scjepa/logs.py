"""Per-rule logging: every thin script sends its logging, warnings and stderr to the rule's log."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def rule_log(path: str | Path | None, level: int = logging.INFO):
    """Route logging + stderr (tqdm bars, warnings) to ``path`` for the duration of a rule.

    An exception is logged with its traceback before it propagates, so the rule's log names
    the failure and Snakemake shows the log path.
    """
    if path is None:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        yield logging.getLogger("scjepa")
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "w", buffering=1)
    old_err = sys.stderr
    sys.stderr = fh
    handler = logging.StreamHandler(fh)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    log = logging.getLogger("scjepa")
    import os

    # which accelerator the scheduler handed this job (SLURM sets it for --gpus jobs)
    log.info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
    try:
        yield log
    except BaseException:
        log.exception("rule failed")
        raise
    finally:
        root.removeHandler(handler)
        sys.stderr = old_err
        fh.close()
