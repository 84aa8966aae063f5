"""Tables: every expected cell shown (number, n/a, failed), best bold, mean ± sd, deterministic CSV."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

from scjepa.report import render as R
from scjepa.report import tables as T
from scjepa.contracts import score_record, write_score

SCRIPTS = Path(__file__).resolve().parents[2] / "workflow" / "scripts"
METHODS = ["scjepa", "mae", "pca", "supervised"]


def _records():
    recs = []
    for m, v in [("scjepa", 0.80), ("mae", 0.70), ("pca", 0.60), ("supervised", 0.65)]:
        recs.append(score_record("zero_shot", m, "pbmc", {"knn_macro_f1": v, "knn_micro_f1": v + 0.1}))
        if m in ("scjepa", "mae"):
            for s, dv in zip(range(3), (0.0, 0.01, 0.02)):
                recs.append(score_record("finetune", m, "pbmc", {"macro_f1": v + dv, "micro_f1": v + 0.1}, seed=s))
    recs.append(score_record("finetune", "supervised", "pbmc", seed=0, status="failed", config={"error": "boom"}))
    recs.append(score_record("finetune", "pca", "pbmc", seed=0, status="n/a"))
    return recs


def _cell(table, method, header):
    i = table.rows.index(method)
    j = [" / ".join(c.header) for c in table.columns].index(header)
    return table.cells[i][j]


def test_cells_show_numbers_na_failed_and_missing():
    t = T.table1_in_distribution(_records(), METHODS, ["pbmc", "lung"], seeds=[0, 1, 2])
    assert _cell(t, "pca", "pbmc / fine-tune / macro-F1").status == "n/a"  # record says n/a
    assert _cell(t, "supervised", "pbmc / fine-tune / macro-F1").status == "failed"  # record says failed
    assert _cell(t, "scjepa", "lung / kNN / macro-F1").status == "failed"  # no record at all
    c = _cell(t, "scjepa", "pbmc / fine-tune / macro-F1")
    assert c.status == "ok" and c.n == 3 and c.mean == pytest.approx(0.81) and c.sd == pytest.approx(0.01)
    md = T.to_markdown(t)
    assert "| pca | 0.600 | 0.700 | n/a | n/a | failed |" in md
    assert "**0.810 ± 0.010**" in md and "**0.800**" in md
    assert md.count("**0.") == 4  # one best per pbmc column; lung has no numbers


def test_declared_na_wins_over_missing_records():
    t = T.table1_in_distribution(_records(), METHODS, ["lung"], na=[{"task": "finetune", "method": "pca"}])
    assert _cell(t, "pca", "lung / fine-tune / macro-F1").status == "n/a"
    assert _cell(t, "pca", "lung / kNN / macro-F1").status == "failed"
    t2 = T.table1_in_distribution(_records(), METHODS, ["lung"], na=[("finetune", "pca", "*")])
    assert _cell(t2, "pca", "lung / fine-tune / micro-F1").status == "n/a"


def test_partial_seeds_are_marked():
    recs = _records() + [score_record("finetune", "mae", "pbmc", seed=3, status="failed")]
    t = T.table1_in_distribution(recs, METHODS, ["pbmc"], seeds=[0, 1, 2, 3])
    c = _cell(t, "mae", "pbmc / fine-tune / macro-F1")
    assert c.partial and c.n == 3
    assert "0.710 ± 0.010†" in T.to_markdown(t)
    assert "$^\\dagger$" in T.to_latex(t)


def test_ties_are_all_bold_and_lower_is_better_works():
    recs = [score_record("bridge", m, "eb", {"w1": v}) for m, v in [("a", 0.5), ("b", 0.5004), ("c", 0.9)]]
    t = T.make_table(recs, ["a", "b", "c"], ["eb"], "w1", higher_is_better=False)
    assert [line[0].best for line in t.cells] == [True, True, False]
    t = T.make_table(recs, ["a", "b", "c"], ["eb"], "w1")
    assert [line[0].best for line in t.cells] == [False, False, True]


def test_generic_table_needs_a_task_when_records_mix_tasks():
    with pytest.raises(ValueError, match="several"):
        T.make_table(_records(), METHODS, ["pbmc"], "macro_f1")
    t = T.make_table(_records(), METHODS, ["pbmc"], "macro_f1", task="finetune")
    assert [line[0].status for line in t.cells] == ["ok", "ok", "n/a", "failed"]


def test_csv_is_deterministic_and_latex_bolds(tmp_path):
    recs = _records()
    a = T.to_csv(T.table1_in_distribution(recs, METHODS, ["pbmc"]))
    b = T.to_csv(T.table1_in_distribution(list(reversed(recs)), METHODS, ["pbmc"]))
    assert a == b
    assert a.splitlines()[0] == (
        "method,pbmc / kNN / macro-F1,pbmc / kNN / micro-F1,pbmc / fine-tune / macro-F1,pbmc / fine-tune / micro-F1"
    )
    tex = T.to_latex(T.table1_in_distribution(recs, METHODS, ["pbmc"]))
    assert "\\textbf{0.800}" in tex and "\\multicolumn{2}{c}{kNN}" in tex and "\\toprule" in tex


def test_integration_table_mean_sd():
    recs = [
        score_record(
            "integration", "scjepa", "lung", {"bio_conservation": b, "batch_correction": 0.5, "total": 0.6}, seed=s
        )
        for s, b in enumerate([0.6, 0.7, 0.8])
    ]
    t = T.table_integration(recs, ["scjepa", "scvi"], ["lung"])
    assert T.to_csv(t).splitlines()[1] == "scjepa,0.700 ± 0.100,0.500 ± 0.000,0.600 ± 0.000"
    assert T.to_csv(t).splitlines()[2] == "scvi,failed,failed,failed"


def _written_records(tmp_path) -> list[str]:
    paths = []
    for r in _records():
        p = tmp_path / r["task"] / r["method"] / f"pbmc_{r['seed']}.json"
        write_score(r, p)
        paths.append(str(p))
    return paths


def test_make_tables_script_treats_missing_files_as_failed(tmp_path):
    paths = _written_records(tmp_path)
    paths.append(str(tmp_path / "finetune" / "supervised" / "lung_0.json"))  # the job failed: no file
    out = {k: str(tmp_path / f"t1.{k}") for k in ("md", "csv", "tex")}
    smk = SimpleNamespace(
        input=SimpleNamespace(scores=paths),
        output=SimpleNamespace(**out),
        params=SimpleNamespace(
            table="table1_in_distribution",
            k=5,
            methods=METHODS,
            datasets=["pbmc", "lung"],
            na=[["finetune", "pca", "*"]],
            seeds=[0, 1, 2],
        ),
        log=[],
    )
    runpy.run_path(str(SCRIPTS / "make_tables.py"), init_globals={"snakemake": smk})
    first = Path(out["csv"]).read_bytes()
    lines = first.decode().splitlines()
    assert lines[4] == "supervised,0.650,0.750,failed,failed,failed,failed,failed,failed"
    assert lines[3] == "pca,0.600,0.700,n/a,n/a,failed,failed,n/a,n/a"
    runpy.run_path(str(SCRIPTS / "make_tables.py"), init_globals={"snakemake": smk})
    assert Path(out["csv"]).read_bytes() == first
    assert "**" in Path(out["md"]).read_text() and "\\begin{tabular}" in Path(out["tex"]).read_text()


def test_render_rule_after_failure_says_so(tmp_path):
    paths = _written_records(tmp_path)
    out = dict(md=str(tmp_path / "t.md"), csv=str(tmp_path / "t.csv"), tex=None)
    params = dict(table="table1_in_distribution", k=7, methods=METHODS, datasets=["pbmc"], seeds=[0, 1, 2],
                  na=None, row_labels=None, dataset_labels=None, digits=None, probe=None)
    t = R.render_rule(dict(scores=paths + [str(tmp_path / "gone.json")]), params, out, after_failure=True)
    assert R.KEEP_GOING_NOTE in t.notes and "--keep-going" in Path(out["md"]).read_text()
    assert "kNN (k = 7)" in t.caption  # the caption says the k the run used
    assert not (tmp_path / "t.tex").exists()
    R.render_rule(dict(scores=paths), params, out)
    assert "--keep-going" not in Path(out["md"]).read_text()
    with pytest.raises(ValueError, match="params.table"):
        R.render_rule(dict(scores=paths), {**params, "table": "nope"}, out)


def test_annotation_notes_come_from_the_records():
    from scjepa.report.tables import table1_in_distribution

    def rec(m, d, steps, n_query=450):
        conf = {"k": 5, "data": {"n_cells": 3000, "source": "synthetic", "world_seed": 2}}
        if steps:
            conf["training"] = {"steps": steps, "epochs": steps // 53, "batch_size": 256}
        return {"task": "zero_shot", "method": m, "dataset": d, "seed": None, "status": "ok",
                "metrics": {"knn_macro_f1": 0.5, "knn_micro_f1": 0.5, "n_query": n_query}, "config": conf}

    recs = [rec("a", "d1", 530), rec("b", "d1", 530), rec("c", "d1", 1060), rec("pca", "d1", 0)]
    t = table1_in_distribution(recs, ["a", "b", "c", "pca"], ["d1"], na=[{"task": "finetune"}],
                               row_labels={"a": "A", "b": "B", "c": "C"})
    assert "Pretraining budget (from the score records): A, B: 530 steps (10 epochs, batch 256); " \
           "C: 1,060 steps (20 epochs, batch 256)." in t.notes
    assert "Data (from the score records): d1: 3,000 cells, embedded world seed 2, 450 query cells." in t.notes


def test_training_budget_is_read_from_the_model_directory(tmp_path):
    import json

    from scjepa.methods.embedding import training_budget

    (tmp_path / "hparams.json").write_text(json.dumps({"family": "mae", "batch_size": 256}))
    assert training_budget(tmp_path) == {}  # no curve: a model that does not train (PCA)
    (tmp_path / "curve.csv").write_text("step,epoch,loss,lr,val_knn_macro_f1\n25,0,1.0,0.001,0.5\n106,1,0.5,0.0009,0.7\n")
    assert training_budget(tmp_path) == {"steps": 106, "epochs": 2, "batch_size": 256}
