"""Fine-tuning in bounded memory (scjepa.tasks.finetune_store): the store path gives the in-memory path's
numbers where it sees the same batches, selects the same way with the store loader's order, holds memory
that does not grow with the cells, and is chosen by tasks.finetune.stream."""

from __future__ import annotations

import copy
import json
import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scjepa.data.store import CSRBatch, build_store
from scjepa.errors import InputError
from scjepa.knn import score_annotation
from scjepa.models.mlp import Encoder
from scjepa.rule import Rule
from scjepa.tasks.entries import finetune_rule
from scjepa.tasks.finetune import FinetuneConfig, finetune_dataset
from scjepa.tasks.finetune_store import SplitRows, finetune_store, rank_codes, streams


def _processed(path, n_cells=900, n_genes=60, seed=0, density=None):
    """A processed-like h5ad: log1p-ish CSR X, categorical cell_type (one label only in test) and a donor
    split whose donors are runs of rows (as in the corpus), with the test donors' rows interleaved."""
    rng = np.random.default_rng(seed)
    types = np.array([f"type_{c}" for c in "abcdef"])
    y = rng.integers(0, len(types), n_cells)
    centres = rng.gamma(1.0, 1.0, (len(types), n_genes))
    X = rng.poisson(centres[y] * (1.0 if density is None else density)).astype(np.float32)
    X = sp.csr_matrix(np.log1p(X))
    donor = np.repeat(np.arange(30), -(-n_cells // 30))[:n_cells]
    split = np.array(["train", "val", "test"])[rng.choice(3, 30, p=[0.6, 0.2, 0.2])][donor]
    split[:3], split[3:6], split[6:9] = "train", "val", "test"  # every split non-empty
    labels = types[y].astype(object)
    labels[np.flatnonzero(split == "test")[:4]] = "only_in_test"  # unseen labels count as errors
    ids = {t: f"X:{i + 1}" for i, t in enumerate([*types, "only_in_test"])}
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels), "split": pd.Categorical(split),
                        "cell_type_id": pd.Categorical([ids[t] for t in labels]),
                        "donor": pd.Categorical(donor.astype(str))}, index=[f"c{i}" for i in range(n_cells)])
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]))
    a.write_h5ad(path)
    return a


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft_store")
    a = _processed(d / "processed.h5ad")
    build_store(d / "processed.h5ad", d / "store", shard_size=128, progress=False)
    return a, d / "processed.h5ad", d / "store"


class _InMemoryOrder:
    """A loader yielding exactly the in-memory path's batches: one rng = default_rng(seed), a permutation of
    the train rows per epoch, cut into batch_size runs; y as store class codes."""

    def __init__(self, adata, store_dir, batch_size, seed):
        classes = json.loads((store_dir / "meta.json").read_text())["classes"]
        tr = np.flatnonzero(np.asarray(adata.obs["split"]) == "train")
        self.X = sp.csr_matrix(adata.X)[tr]
        self.y = np.array([classes.index(c) for c in np.asarray(adata.obs["cell_type"].astype(str))[tr]])
        self.rng, self.batch_size = np.random.default_rng(seed), batch_size

    def set_epoch(self, epoch):
        pass

    def __iter__(self):
        order = self.rng.permutation(len(self.y))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield {"x": CSRBatch.from_scipy(self.X[idx]), "y": torch.from_numpy(self.y[idx])}


CFG = dict(max_epochs=4, batch_size=64, device="cpu", eval_batch_size=100)


def test_same_batches_give_the_in_memory_numbers_exactly(tiny):
    adata, processed, store = tiny
    torch.manual_seed(0)
    enc = Encoder(adata.n_vars, hidden=(32,), latent=8)
    cfg = FinetuneConfig(**CFG)
    mem, mem_cfg = finetune_dataset(adata, encoder=copy.deepcopy(enc), init="pretrained", seed=3, config=cfg)
    st, st_cfg = finetune_store(store, processed, encoder=copy.deepcopy(enc), init="pretrained", seed=3, config=cfg,
                                train_loader=_InMemoryOrder(adata, store, cfg.batch_size, seed=3))
    drop = {"train_seconds"}
    assert {k: v for k, v in st.metrics.items() if k not in drop} == {k: v for k, v in mem.metrics.items() if k not in drop}
    assert st.history == [{**h, "train_loss": pytest.approx(h["train_loss"], rel=1e-6)} for h in mem.history]
    assert list(st.test_pred) == list(mem.test_pred) and st.classes == mem.classes
    assert st.metrics["n_query_unseen_labels"] == 4
    assert (mem_cfg["data_path"], st_cfg["data_path"]) == ("in_memory", "store")
    assert {k: v for k, v in st_cfg.items() if k not in ("data_path", "store")} == \
           {k: v for k, v in mem_cfg.items() if k != "data_path"}


def test_genes_are_aligned_as_in_memory(tiny):
    adata, processed, store = tiny
    genes = list(adata.var_names)
    model_genes = genes[::-1][: int(0.8 * len(genes))] + ["not_in_data"]
    torch.manual_seed(0)
    enc = Encoder(len(model_genes), hidden=(16,), latent=4)
    cfg = FinetuneConfig(**{**CFG, "max_epochs": 2})
    mem, _ = finetune_dataset(adata, encoder=copy.deepcopy(enc), genes=model_genes, seed=0, config=cfg)
    st, _ = finetune_store(store, processed, encoder=copy.deepcopy(enc), genes=model_genes, seed=0, config=cfg,
                           train_loader=_InMemoryOrder(adata, store, cfg.batch_size, seed=0))
    assert st.metrics["gene_coverage"] == pytest.approx((len(model_genes) - 1) / len(model_genes))
    assert {k: v for k, v in st.metrics.items() if k != "train_seconds"} == \
           {k: v for k, v in mem.metrics.items() if k != "train_seconds"}
    with pytest.raises(InputError, match="store"):
        finetune_store(store, processed, encoder=Encoder(5, hidden=(4,), latent=2), genes=[f"x{i}" for i in range(5)],
                       config=cfg)


def test_hierarchy_scores_are_the_in_memory_ones(tiny, tmp_path):
    from scjepa.ontology import Hierarchy, load_obo, write_obo

    # type_b..type_f under type_a, only_in_test under type_b: predicting a child of the true type is right
    terms = pd.DataFrame({"term_id": [f"X:{i}" for i in range(8)],
                          "name": ["cell", *[f"type_{c}" for c in "abcdef"], "only_in_test"],
                          "parent_id": [None, "X:0", "X:1", "X:1", "X:1", "X:1", "X:1", "X:2"]})
    write_obo(terms, tmp_path / "t.obo", ontology="x", data_version="x/1")
    h = Hierarchy(load_obo(tmp_path / "t.obo"))
    adata, processed, store = tiny
    torch.manual_seed(0)
    enc = Encoder(adata.n_vars, hidden=(32,), latent=8)
    cfg = FinetuneConfig(**{**CFG, "max_epochs": 2})
    mem, _ = finetune_dataset(adata, encoder=copy.deepcopy(enc), seed=0, config=cfg, hierarchy=h)
    st, _ = finetune_store(store, processed, encoder=copy.deepcopy(enc), seed=0, config=cfg, hierarchy=h,
                           train_loader=_InMemoryOrder(adata, store, cfg.batch_size, seed=0))
    hier = {k: v for k, v in mem.metrics.items() if "hier_" in k}
    assert len(hier) == 6 and {k: st.metrics[k] for k in hier} == hier


def test_store_loader_order_same_selection_and_scores_close(tiny):
    """With the store loader's own order (shards and rows shuffled per epoch) the batches differ from the
    in-memory permutation, so the numbers are not equal; the selection is the same rule and, on this
    fixture, the test macro-F1 lands within 0.1 of the in-memory path's."""
    adata, processed, store = tiny
    torch.manual_seed(0)
    enc = Encoder(adata.n_vars, hidden=(32,), latent=8)
    cfg = FinetuneConfig(**CFG)
    mem, _ = finetune_dataset(adata, encoder=copy.deepcopy(enc), seed=1, config=cfg)
    st, st_cfg = finetune_store(store, processed, encoder=copy.deepcopy(enc), seed=1, config=cfg, buffer_shards=2)
    m, h = st.metrics, st.history
    best = max(e["val_macro_f1"] for e in h)
    assert m["val_macro_f1"] == best and h[int(m["best_epoch"]) - 1]["val_macro_f1"] == best
    assert min(i for i, e in enumerate(h) if e["val_macro_f1"] == best) == m["best_epoch"] - 1  # first best
    test_labels = np.asarray(adata.obs["cell_type"].astype(str))[np.asarray(adata.obs["split"]) == "test"]
    assert score_annotation(test_labels, st.test_pred) == {k: m[k] for k in ("macro_f1", "micro_f1", "weighted_f1", "accuracy")}
    for k in ("n_train", "n_val", "n_test", "n_classes_train", "n_query_unseen_labels"):
        assert m[k] == mem.metrics[k]
    assert abs(m["macro_f1"] - mem.metrics["macro_f1"]) < 0.1, (m["macro_f1"], mem.metrics["macro_f1"])
    assert st_cfg["store"]["buffer_shards"] == 2
    # seeded: the same seed gives the same numbers
    again, _ = finetune_store(store, processed, encoder=copy.deepcopy(enc), seed=1, config=cfg, buffer_shards=2)
    assert {k: v for k, v in again.metrics.items() if k != "train_seconds"} == \
           {k: v for k, v in m.items() if k != "train_seconds"}


def test_val_from_the_store_or_the_processed_file_scores_the_same(tiny):
    """The store's val split (shard order) and the processed file's val rows (file order) are the same cells;
    a cell's prediction does not depend on its chunk, so the per-epoch val scores and the selection agree."""
    adata, processed, store = tiny
    torch.manual_seed(0)
    enc = Encoder(adata.n_vars, hidden=(32,), latent=8)
    cfg = FinetuneConfig(**{**CFG, "max_epochs": 3})
    runs = {v: finetune_store(store, processed, encoder=copy.deepcopy(enc), seed=2, config=cfg, val_from=v,
                              buffer_shards=2) for v in ("store", "processed")}
    (a, a_cfg), (b, b_cfg) = runs["store"], runs["processed"]
    assert a.history == b.history
    assert {k: v for k, v in a.metrics.items() if k != "train_seconds"} == \
           {k: v for k, v in b.metrics.items() if k != "train_seconds"}
    assert a_cfg["store"]["val"] == "store's val split" and b_cfg["store"]["val"] == "processed file's val rows"
    with pytest.raises(InputError, match="val_from"):
        finetune_store(store, processed, encoder=copy.deepcopy(enc), config=cfg, val_from="elsewhere")


def test_split_rows_reads_the_split_in_file_order_in_bounded_chunks(tiny):
    adata, processed, _ = tiny
    for chunk in (1, 7, 100, 10_000):
        rows = SplitRows(processed, "test", chunk_size=chunk)
        parts = list(rows.chunks())
        rows.close()
        assert all(X.shape[0] <= chunk for X, _ in parts)
        want = adata[adata.obs["split"] == "test"]
        got = sp.vstack([X for X, _ in parts]).toarray()
        np.testing.assert_array_equal(got, want.X.toarray())
        labels = np.concatenate([y for _, y in parts])
        assert [rows.categories[c] for c in labels] == list(want.obs["cell_type"].astype(str))


def test_rank_codes_score_as_the_labels_do():
    vocab = ["b cell", "T cell", "a", "NK", "b"]
    ranks = rank_codes(vocab)
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    assert score_annotation(ranks[t], ranks[p]) == score_annotation(np.array(vocab)[t], np.array(vocab)[p])


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_cells(tmp_path):
    """tracemalloc (numpy and Python allocations: X chunks, batches' row copies, labels) at 2,000 and 8,000
    cells: the store path grows by a few bytes per cell (codes), the in-memory path by X's rows."""
    n_genes, cfg = 400, FinetuneConfig(max_epochs=1, batch_size=64, device="cpu", eval_batch_size=128)
    peaks = {}
    for n in (2000, 8000):
        d = tmp_path / str(n)
        d.mkdir()
        a = _processed(d / "p.h5ad", n_cells=n, n_genes=n_genes, seed=2, density=3.0)
        x_row = 8 * a.X.nnz / n  # bytes of one CSR row of X (float32 value + int32 index per non-zero)
        build_store(d / "p.h5ad", d / "store", shard_size=256, progress=False)
        torch.manual_seed(0)
        enc = Encoder(n_genes, hidden=(16,), latent=4)
        peaks[("store", n)] = _peak(lambda: finetune_store(d / "store", d / "p.h5ad", encoder=copy.deepcopy(enc),
                                                           config=cfg, buffer_shards=2))
        peaks[("memory", n)] = _peak(lambda: finetune_dataset(ad.read_h5ad(d / "p.h5ad"), encoder=copy.deepcopy(enc),
                                                              config=cfg))
    grow_store = (peaks[("store", 8000)] - peaks[("store", 2000)]) / 6000
    grow_memory = (peaks[("memory", 8000)] - peaks[("memory", 2000)]) / 6000
    assert grow_memory > 0.8 * x_row, (x_row, peaks)  # the test sees X when it is held
    assert grow_store < 0.1 * x_row, (grow_store, peaks)  # ~ tens of bytes a cell (codes), not X


def test_the_rule_picks_the_path(tiny, tmp_path):
    assert streams("sctab", "sctab", "corpus") and not streams("hlca", "sctab", "corpus")
    assert not streams("sctab", "sctab", "never")
    with pytest.raises(InputError, match="stream"):
        streams("sctab", "sctab", "always")
    adata, processed, store = tiny
    params = {"finetune": {"max_epochs": 1, "batch_size": 64, "device": "cpu"}, "init": "random", "seeds": [0]}
    for with_store in (False, True):
        out = tmp_path / f"{with_store}.json"
        inp = {"processed": str(processed), **({"store": str(store)} if with_store else {})}
        p = copy.deepcopy(params)
        if with_store:
            p["finetune"]["store"] = {"buffer_shards": 2}
        finetune_rule(Rule(input=inp, output={"scores": [str(out)]}, params=p,
                           wildcards={"method": "supervised", "dataset": "d"}))
        rec = json.loads(out.read_text())
        assert rec["status"] == "ok" and rec["config"]["data_path"] == ("store" if with_store else "in_memory")
        assert rec["metrics"]["n_test"] == float((adata.obs["split"] == "test").sum())
