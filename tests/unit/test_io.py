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
