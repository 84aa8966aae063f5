"""Atomic writers and the bounded-memory CSR appender."""

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from anndata.io import read_elem

from scjepa.io import CSRAppender, atomic_path, write_json


def test_csr_appender_roundtrips_through_anndata(tmp_path):
    blocks = [sp.random(n, 30, density=0.2, format="csr", dtype=np.float32, random_state=i) for i, n in enumerate((5, 0, 17, 9))]
    with h5py.File(tmp_path / "x.h5", "w") as f:
        w = CSRAppender(f, "X", 30)
        for b in blocks:
            w.append(b)
    with h5py.File(tmp_path / "x.h5") as f:
        got = read_elem(f["X"])
    assert (got != sp.vstack(blocks)).nnz == 0 and got.shape == (31, 30)


def test_csr_appender_rejects_wrong_width(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        with pytest.raises(ValueError, match="columns"):
            CSRAppender(f, "X", 3).append(sp.csr_matrix(np.ones((2, 4))))


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    write_json({"b": 1, "a": np.int64(2)}, tmp_path / "ok.json")
    assert (tmp_path / "ok.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'


def test_rule_log_takes_logging_stderr_and_the_failure(tmp_path):
    import logging
    import sys

    from scjepa.logs import rule_log, start_rule_log, stop_rule_log

    path = tmp_path / "logs" / "rule.log"
    err = sys.stderr
    with pytest.raises(RuntimeError):
        with rule_log(path) as log:
            log.info("hello")
            print("a progress bar", file=sys.stderr)
            raise RuntimeError("boom")
    assert sys.stderr is err
    text = path.read_text()
    for needle in ("CUDA_VISIBLE_DEVICES", "hello", "a progress bar", "rule failed", "RuntimeError: boom"):
        assert needle in text, needle
    start_rule_log(path)
    logging.getLogger("scjepa.x").info("first")
    start_rule_log(path)  # the same job writing a second record keeps its log
    logging.getLogger("scjepa.x").info("second")
    stop_rule_log()
    assert "first" in path.read_text() and "second" in path.read_text() and sys.stderr is err
