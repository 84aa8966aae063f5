"""Fine-tuning: it learns, selects on val, aligns genes, and reports n/a for encoder-less methods."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

from scjepa.rule import Rule
from scjepa.tasks.entries import finetune_rule

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from scjepa.errors import InputError
from scjepa.models.mlp import Encoder
from scjepa.contracts import NotApplicableError
from scjepa.tasks.finetune import FinetuneConfig, finetune_dataset, reinitialise
from scjepa.tasks.knn import zero_shot

SCRIPTS = Path(__file__).resolve().parents[2] / "workflow" / "scripts"
N_GENES = 120


def _structured(n_cells=1200, seed=0):
    """Processed-like AnnData: log1p-normalised X, cell_type, donor split."""
    try:
        from scjepa.data.preprocess import normalise_log1p
        from scjepa.data.splits import donor_split
        from scjepa.data.synthetic import generate

        raw = generate("in_distribution", n_cells, n_genes=N_GENES, seed=seed)
        X = normalise_log1p(raw.X.tocsr(), 1e4)
        obs = raw.obs[["cell_type", "donor", "batch"]].copy()
        obs["split"] = donor_split(obs["donor"], seed=seed)
        return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=raw.var_names))
    except ImportError:  # the data layer is not there: Gaussian blobs in gene space
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 6, n_cells)
        X = np.maximum(rng.normal(0, 1, (6, N_GENES))[y] + rng.normal(0, 1.5, (n_cells, N_GENES)), 0)
        obs = pd.DataFrame(
            {
                "cell_type": [f"t{i}" for i in y],
                "split": rng.choice(["train", "val", "test"], n_cells, p=[0.7, 0.15, 0.15]),
            },
            index=[f"c{i}" for i in range(n_cells)],
        )
        return ad.AnnData(X=X.astype(np.float32), obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]))


@pytest.fixture(scope="module")
def data():
    return _structured()


def _frozen_knn(encoder, adata):
    encoder.eval()
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    with torch.no_grad():
        emb = encoder(torch.from_numpy(np.asarray(X, dtype=np.float32))).numpy()
    a = ad.AnnData(obs=adata.obs.copy())
    a.obsm["X_emb"] = emb
    return zero_shot(a, probe=False)[0]


def test_finetuning_beats_the_frozen_encoder_knn(data):
    torch.manual_seed(0)
    enc = Encoder(N_GENES)  # an untrained encoder: fine-tuning has to learn the types
    frozen = _frozen_knn(enc, data)
    result, cfg = finetune_dataset(
        data, encoder=enc, init="pretrained", seed=0, config=FinetuneConfig(max_epochs=8, batch_size=128, device="cpu")
    )
    m = result.metrics
    assert m["macro_f1"] > frozen["knn_macro_f1"] + 0.05, (m["macro_f1"], frozen["knn_macro_f1"])
    # Model selection on val: the reported val score is the best epoch's.
    best = max(h["val_macro_f1"] for h in result.history)
    assert m["val_macro_f1"] == pytest.approx(best)
    assert result.history[int(m["best_epoch"]) - 1]["val_macro_f1"] == pytest.approx(best)
    assert m["micro_f1"] == pytest.approx(m["accuracy"])
    assert cfg["lr"] == 9e-4 and cfg["weight_decay"] == 0.05 and cfg["init"] == "pretrained"
    assert m["gene_coverage"] == 1.0


def test_random_init_is_seeded_and_differs_from_the_given_weights():
    a, b = Encoder(10, hidden=(8,), latent=4), Encoder(10, hidden=(8,), latent=4)
    before = [p.detach().clone() for p in a.parameters()]
    reinitialise(a, 3)
    reinitialise(b, 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), before))


def test_patience_stops_early(data):
    result, _ = finetune_dataset(
        data[:400].copy(),
        encoder=Encoder(N_GENES, hidden=(32,), latent=8),
        init="random",
        seed=1,
        config=FinetuneConfig(max_epochs=30, batch_size=64, lr=0.0, patience=2, device="cpu"),
    )
    # lr = 0: val never improves after epoch 1, so training stops at epoch 3.
    assert result.metrics["epochs_run"] == 3 and result.metrics["best_epoch"] == 1


def test_genes_are_aligned_by_id(data):
    sub = data[:300].copy()
    genes = list(sub.var_names)
    model_genes = genes[::-1][: int(0.8 * len(genes))] + ["not_in_data_1", "not_in_data_2"]
    enc = Encoder(len(model_genes), hidden=(16,), latent=4)
    result, _ = finetune_dataset(sub, encoder=enc, genes=model_genes, config=FinetuneConfig(max_epochs=1, device="cpu"))
    assert result.metrics["gene_coverage"] == pytest.approx((len(model_genes) - 2) / len(model_genes))
    with pytest.raises(InputError, match="my_dataset.h5ad"):
        finetune_dataset(
            sub,
            encoder=Encoder(5, hidden=(4,), latent=2),
            genes=[f"x{i}" for i in range(5)],
            config=FinetuneConfig(max_epochs=1, device="cpu"),
            path="my_dataset.h5ad",
        )


def test_method_without_encoder_is_not_applicable(monkeypatch, data, tmp_path):
    import scjepa.methods as methods

    def no_encoder(model_dir):
        raise ValueError(f"model '{model_dir}' (family 'pca') has no torch encoder")

    monkeypatch.setattr(methods, "load_encoder", no_encoder)
    with pytest.raises(NotApplicableError):
        finetune_dataset(data, tmp_path)
    # The script turns it into an "n/a" record (and does not fail the job).
    processed = tmp_path / "processed.h5ad"
    data[:50].copy().write_h5ad(processed)
    out = tmp_path / "ft" / "pca" / "d" / "0.json"
    finetune_rule(Rule(input={"processed": str(processed), "model": str(tmp_path)}, output={"scores": [str(out)]},
                       params={"finetune": {"max_epochs": 1}, "init": "pretrained", "seeds": [0]},
                       wildcards={"method": "pca", "dataset": "d"}))
    rec = json.loads(out.read_text())
    assert rec["status"] == "n/a" and rec["seed"] == 0 and rec["metrics"] == {}


def test_script_records_failures_only_when_asked(tmp_path):
    out = tmp_path / "x.json"
    base = dict(input={"processed": str(tmp_path / "missing.h5ad")}, output={"scores": [str(out)]},
                wildcards={"method": "supervised", "dataset": "d"})
    params = {"init": "random", "finetune": {}, "seeds": [1]}
    with pytest.raises(InputError, match="missing.h5ad"):
        finetune_rule(Rule(params=params, **base))
    assert not out.exists()
    finetune_rule(Rule(params={**params, "record_failures": True}, **base))
    rec = json.loads(out.read_text())
    assert rec["status"] == "failed" and "missing.h5ad" in rec["config"]["error"]


def test_script_fine_tunes_every_seed_of_a_job_as_separate_jobs_would(data, tmp_path):
    """params.seeds + output.scores/histories: one record per seed, equal to a job of its own."""
    from scjepa.data.store import ArrayLoader
    from scjepa.methods import pretrain

    X = data.X.toarray() if hasattr(data.X, "toarray") else np.asarray(data.X)
    codes = pd.Categorical(data.obs["cell_type"]).codes.astype(np.int64)
    loader = ArrayLoader(X.astype(np.float32), codes, batch_size=100, seed=0, gene_ids=list(data.var_names))
    model = tmp_path / "models" / "mae"
    hp = {"family": "mae", "hidden": (32,), "latent": 8, "max_epochs": 1, "progress": False, "val_every": 0}
    pretrain(hp, None, None, model, seed=0, method_name="mae", loader=loader, tune_malloc=False)
    processed = tmp_path / "processed.h5ad"
    data.write_h5ad(processed)

    def job(seeds, outdir):
        out = SimpleNamespace(scores=[str(outdir / f"{s}.json") for s in seeds],
                              histories=[str(outdir / f"{s}.history.csv") for s in seeds])
        params = {"finetune": {"max_epochs": 2}, "init": "pretrained", "seeds": seeds}
        smk = SimpleNamespace(input=SimpleNamespace(processed=str(processed), model=str(model)), output=out,
                              params=SimpleNamespace(**params),
                              wildcards=SimpleNamespace(method="mae", dataset="d"), log=[], threads=1)
        runpy.run_path(str(SCRIPTS / "score_finetune.py"), init_globals={"snakemake": smk})  # the script as Snakemake runs it

    job([0, 1], tmp_path / "together")
    for s in (0, 1):
        job([s], tmp_path / f"alone{s}")
        together = json.loads((tmp_path / "together" / f"{s}.json").read_text())
        alone = json.loads((tmp_path / f"alone{s}" / f"{s}.json").read_text())
        assert together["seed"] == alone["seed"] == s and together["status"] == "ok"
        drop = {"train_seconds"}
        assert {k: v for k, v in together["metrics"].items() if k not in drop} == \
               {k: v for k, v in alone["metrics"].items() if k not in drop}
        assert (tmp_path / "together" / f"{s}.history.csv").read_text() == \
               (tmp_path / f"alone{s}" / f"{s}.history.csv").read_text()
    a, b = (json.loads((tmp_path / "together" / f"{s}.json").read_text())["metrics"] for s in (0, 1))
    assert a != b  # the seeds differ


def test_script_refuses_seeds_and_outputs_of_other_lengths_before_any_run(tmp_path):
    rule = Rule(input={"processed": str(tmp_path / "never_read.h5ad")},
                output={"scores": [str(tmp_path / "0.json")], "histories": [str(tmp_path / "0.csv")]},
                params={"seeds": [0, 1], "init": "random", "finetune": {}},
                wildcards={"method": "supervised", "dataset": "d"})
    with pytest.raises(ValueError, match="output.scores"):
        finetune_rule(rule)
    assert list(tmp_path.iterdir()) == []
