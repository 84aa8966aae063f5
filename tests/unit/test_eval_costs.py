"""The evaluation cost model behind the score rules' resources (scjepa.eval_costs)."""

from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scjepa import eval_costs as ec

HLCA, TS, SCTAB_TEST = 775_790, 301_871, 3_448_832
SCTAB = ec.Shape(n_obs=22_189_056, n_vars=19_331, nnz=22_189_056 * 2000,
                 splits={"train": 15_240_192, "val": 3_500_032, "test": SCTAB_TEST})


def shape(n, nnz_per_cell=2000):
    return ec.Shape(n_obs=n, n_vars=19_331, nnz=n * nnz_per_cell)


SIZES = [10_000, 100_000, TS, HLCA, 1_000_000, SCTAB_TEST]


@pytest.mark.parametrize("cost", [
    lambda s: ec.zero_shot_cost(s),
    lambda s: ec.spatial_cost(s, s),
    lambda s: ec.finetune_cost(s, epochs=20, seeds=5),
    lambda s: ec.finetune_cost(s, epochs=20, seeds=5, gpu=True),
    lambda s: ec.integration_cost(s, runs=5),
], ids=["zero_shot", "spatial", "finetune_cpu", "finetune_gpu", "integration"])
def test_monotone_in_cells(cost):
    costs = [cost(shape(n)) for n in SIZES]
    for a, b in zip(costs, costs[1:]):
        assert b.cpu_s >= a.cpu_s and b.mem_mb >= a.mem_mb and b.gpu_s >= a.gpu_s
    res = [ec.job_resources("zero_shot", c) for c in costs]
    for a, b in zip(res, res[1:]):
        assert b["mem_mb"] >= a["mem_mb"] and b["runtime"] >= a["runtime"]


def test_knn_is_quadratic_and_matches_the_measurement():
    # benchmarks/results/eval_scale.json: 100k cells (69,881 x 15,029 pairs) took 5.4 CPU-s
    assert ec.knn_seconds(69_881, 15_029) == pytest.approx(5.4, rel=0.25)
    assert ec.knn_seconds(2000, 2000) == pytest.approx(4 * ec.knn_seconds(1000, 1000))


def test_sane_at_paper_sizes():
    # HLCA and Tabula Sapiens: zero-shot well within a day and a normal node's memory
    for n in (HLCA, TS):
        c = ec.zero_shot_cost(shape(n))
        assert c.cpu_s < 24 * 3600 and c.mem_mb < 8_000
    # the scTab test set against its 15.2M-cell reference: embeddings only (64-d), memory bounded by them
    c = ec.zero_shot_cost(SCTAB)
    assert c.mem_mb < 64_000
    assert ec.zero_shot_cost(SCTAB, probe=False).cpu_s == pytest.approx(
        5.0 + ec.knn_seconds(15_240_192, SCTAB_TEST))


def test_integration_memory_of_the_scib_part_is_bounded_by_the_cap():
    small, large = ec.integration_cost(shape(1_000_000), runs=5), ec.integration_cost(shape(10_000_000), runs=5)
    assert small.cpu_s == large.cpu_s  # every run is capped at max_cells
    expr = ec.CSR_BYTES_PER_NNZ * 9_000_000 * 2000 / 2**20 + ec.EMB_BYTES_PER_CELL * 9_000_000 / 2**20
    assert large.mem_mb - small.mem_mb == pytest.approx(expr)  # only the data held grows, not scib's share
    uncapped = ec.integration_cost(shape(1_000_000), runs=5, max_cells=None)
    assert uncapped.cpu_s > 10 * small.cpu_s
    assert ec.integration_run_cells(1000, 0.8, 50_000) == 800
    assert ec.integration_run_cells(10**6, 0.8, 50_000) == 50_000


def test_finetune_gpu_is_faster_and_memory_follows_the_non_zeros():
    cpu, gpu = ec.finetune_cost(shape(HLCA), epochs=20, seeds=5), ec.finetune_cost(shape(HLCA), epochs=20, seeds=5, gpu=True)
    assert gpu.gpu_s < cpu.cpu_s and cpu.gpu_s == 0
    assert ec.finetune_cost(shape(HLCA, 4000), epochs=1, seeds=1).mem_mb > ec.finetune_cost(shape(HLCA), epochs=1, seeds=1).mem_mb


def test_job_resources_floor_and_attempt_scaling():
    assert ec.job_resources("zero_shot", None) == {"mem_mb": 4000, "runtime": 30}  # the rule's former values
    assert ec.job_resources("zero_shot", None, attempt=2) == {"mem_mb": 6000, "runtime": 60}
    assert ec.job_resources("finetune", None, floor=(8000, 600)) == {"mem_mb": 8000, "runtime": 600}
    big = ec.Cost(cpu_s=36_000, mem_mb=20_000)
    r1, r2 = ec.job_resources("zero_shot", big), ec.job_resources("zero_shot", big, attempt=2)
    assert r1["mem_mb"] >= ec.MEM_SAFETY * 20_000 and r1["runtime"] >= 36_000 / 60
    assert r2["mem_mb"] == pytest.approx(1.5 * r1["mem_mb"], abs=100) and r2["runtime"] == 2 * r1["runtime"]


def _h5ad(path, n=500, genes=40):
    rng = np.random.default_rng(0)
    X = sp.random(n, genes, density=0.1, format="csr", random_state=0, dtype=np.float32)
    obs = pd.DataFrame({"split": pd.Categorical(rng.choice(["train", "val", "test"], n, p=[0.6, 0.2, 0.2])),
                        "cell_type": pd.Categorical(rng.choice(["T", "B", "NK"], n))},
                       index=[f"c{i}" for i in range(n)])
    a = ad.AnnData(X=X, obs=obs)
    a.write_h5ad(path)
    return a


def test_read_shape_from_the_header(tmp_path):
    a = _h5ad(tmp_path / "p.h5ad")
    s = ec.read_shape(tmp_path / "p.h5ad")
    assert (s.n_obs, s.n_vars, s.nnz, s.n_classes) == (500, 40, a.X.nnz, 3)
    assert s.splits == a.obs["split"].value_counts().to_dict()
    assert s.split("test") == int((a.obs["split"] == "test").sum()) and s.split(None) == 500
    # the probe's classes come from the header: 3 classes cost less than scTab's 164
    assert ec.zero_shot_cost(s).cpu_s < ec.zero_shot_cost(s, n_classes=164).cpu_s


def test_rule_callables_read_the_input_and_fall_back_before_it_exists(tmp_path):
    _h5ad(tmp_path / "p.h5ad", n=2000)
    mem_mb, runtime = ec.resources("zero_shot", lambda w, i, shape_of: (lambda s: s and ec.zero_shot_cost(s))(
        shape_of(i.processed)))
    w = SimpleNamespace()
    absent = SimpleNamespace(processed=str(tmp_path / "missing.h5ad"))
    assert (mem_mb(w, absent, 1), runtime(w, absent, 1)) == (4000, 30)
    present = SimpleNamespace(processed=str(tmp_path / "p.h5ad"))
    assert (mem_mb(w, present, 1), runtime(w, present, 1)) == (4000, 30)  # small: the floor
    assert (mem_mb(w, present, 2), runtime(w, present, 3)) == (6000, 90)


def test_finetune_store_path_memory_is_bounded_by_batch_buffer_and_chunk_not_by_x():
    kw = dict(epochs=20, seeds=5, gpu=True, streaming=True, batch_size=1024, shard_size=16384, buffer_shards=8)
    sctab = ec.finetune_cost(SCTAB, **kw)
    in_memory = ec.finetune_cost(SCTAB, epochs=20, seeds=5, gpu=True)
    assert in_memory.mem_mb > 300_000 and sctab.mem_mb < 24 * 1024  # 355 GB of CSR vs a 24 GiB node
    assert sctab.gpu_s == in_memory.gpu_s  # the time model is the same (an upper bound for the store)
    # the dataset's size enters only through a few bytes per cell: 10x the cells, < 1 GB more
    small = ec.finetune_cost(shape(HLCA), **kw)
    big = ec.finetune_cost(shape(10 * HLCA), **kw)
    assert big.mem_mb - small.mem_mb < 1000
    assert big.mem_mb - small.mem_mb < 0.01 * (ec.finetune_cost(shape(10 * HLCA), epochs=1, seeds=1).mem_mb
                                               - ec.finetune_cost(shape(HLCA), epochs=1, seeds=1).mem_mb)
    # ... and grows with what the job holds at once: the shards buffered, the batch, the evaluation chunk
    more_buffer = ec.finetune_cost(SCTAB, **{**kw, "buffer_shards": 16})
    assert more_buffer.mem_mb - sctab.mem_mb == pytest.approx(
        16 * 16384 * (8 * 2000 + ec.STORE_BYTES_PER_CELL) / 2**20)
    assert ec.finetune_cost(SCTAB, **{**kw, "eval_chunk": 8192}).mem_mb > sctab.mem_mb
    assert ec.finetune_cost(SCTAB, **{**kw, "gpu": False}).mem_mb > sctab.mem_mb  # dense batches on the host
    hier = ec.finetune_cost(SCTAB, **kw, hierarchy=True)
    assert hier.mem_mb - sctab.mem_mb == pytest.approx(ec.HIER_BYTES_PER_TEST_CELL * SCTAB_TEST / 2**20)
    assert hier.mem_mb < 24 * 1024
