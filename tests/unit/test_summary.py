"""The summary: ranks per readout and per task family from hand-made records, through the tables' own code."""

from __future__ import annotations

import math

import pytest

from scjepa.contracts import score_record, write_score
from scjepa.report import summary as S
from scjepa.report import tables as T
from scjepa.rule import Rule

METHODS = ["scjepa", "mae", "pca", "random", "labels"]
CONTROLS = {"random": "negative", "labels": "positive"}
LABELS = {"scjepa": "scJEPA", "mae": "scMAE", "pca": "PCA", "random": "Random", "labels": "Labels + noise"}
# zero-shot kNN macro-F1 / micro-F1 on one dataset; pca and mae tie on micro-F1 at the displayed precision
ZS = {"scjepa": (0.80, 0.9001), "mae": (0.70, 0.85), "pca": (0.60, 0.8502), "random": (0.10, 0.20),
      "labels": (0.99, 0.99)}
# integration totals over two runs (scjepa best, pca worst; the negative control beats pca)
INT = {"scjepa": (0.70, 0.72), "mae": (0.60, 0.62), "pca": (0.40, 0.42), "random": (0.50, 0.50),
       "labels": (0.90, 0.90)}


def _records():
    recs = []
    for m, (ma, mi) in ZS.items():
        recs.append(score_record("zero_shot", m, "pbmc", {"knn_macro_f1": ma, "knn_micro_f1": mi}))
    for m in ("scjepa", "mae"):  # fine-tuning: only the encoders; pca is n/a (declared)
        for s in (0, 1):
            recs.append(score_record("finetune", m, "pbmc", {"macro_f1": {"scjepa": 0.85, "mae": 0.88}[m],
                                                            "micro_f1": 0.9}, seed=s))
    for m, vals in INT.items():
        for run, v in enumerate(vals):
            recs.append(score_record("integration", m, "batches", {"bio_conservation": v, "batch_correction": v,
                                                                   "total": v}, seed=run))
    return recs


NA = [{"task": "finetune", "method": m} for m in ("pca", "random", "labels")]


def _tables(records):
    t1 = T.table1_in_distribution(records, METHODS, ["pbmc"], na=NA, seeds=[0, 1])
    ti = T.table_integration(records, METHODS, ["batches"], seeds=[0, 1])
    for t in (t1, ti):
        T.mark_controls(t, CONTROLS)
    return [("annotation", t1), ("integration", ti)]


def _col(s, label):
    return next(j for j, ro in enumerate(s.readouts) if ro.label == label)


def test_ranks_follow_the_tables_numbers():
    s = S.build_summary(_tables(_records()), controls=CONTROLS, methods=METHODS, row_labels=LABELS)
    assert s.methods == ["scjepa", "mae", "pca", "random", "labels"]  # controls last
    assert s.families == ["annotation", "integration"]
    i = {m: k for k, m in enumerate(s.methods)}
    macro = _col(s, "pbmc / kNN / macro-F1")
    assert [s.ranks[i[m]][macro] for m in ("scjepa", "mae", "pca")] == [1, 2, 3]
    micro = _col(s, "pbmc / kNN / micro-F1")  # 0.850 == 0.850 at 3 digits: a tie shares rank 2
    assert [s.ranks[i[m]][micro] for m in ("scjepa", "mae", "pca")] == [1, 2, 2]
    ft = _col(s, "pbmc / fine-tune / macro-F1")
    assert s.ranks[i["mae"]][ft] == 1 and s.ranks[i["scjepa"]][ft] == 2
    assert s.status[i["pca"]][ft] == "n/a" and math.isnan(s.ranks[i["pca"]][ft])
    # controls: the rank they would take among the methods, never counted in the methods' ranks
    assert s.ranks[i["random"]][macro] == 4 and s.ranks[i["labels"]][macro] == 1
    total = _col(s, "batches / total")
    assert s.ranks[i["random"]][total] == 3  # 0.50 beats pca's 0.41 only
    # family: mean rank over the readouts a method has a value in (pca: 2 kNN readouts; n/a does not count)
    k = s.families.index("annotation")
    ranks = {m: [s.ranks[i[m]][j] for j, ro in enumerate(s.readouts) if ro.family == "annotation"] for m in s.methods}
    assert s.mean_rank[i["pca"]][k] == pytest.approx((3 + 2) / 2) and s.n_ranked[i["pca"]][k] == 2
    # scjepa: kNN macro 1, kNN micro 1, fine-tune macro 2 (mae 0.88), fine-tune micro 1 (a tie at 0.900)
    assert ranks["scjepa"] == [1, 1, 2, 1] and s.mean_rank[i["scjepa"]][k] == pytest.approx(5 / 4)
    assert ranks["mae"] == [2, 2, 1, 1] and s.mean_rank[i["mae"]][k] == pytest.approx(6 / 4)
    order = sorted(("scjepa", "mae", "pca"), key=lambda m: s.mean_rank[i[m]][k])
    assert [s.family_rank[i[m]][k] for m in order] == [1, 2, 3]
    assert math.isnan(s.family_rank[i["random"]][k])  # controls are not ranked
    ki = s.families.index("integration")
    assert [s.family_rank[i[m]][ki] for m in ("scjepa", "mae", "pca")] == [1, 2, 3]


def test_every_method_and_control_appears_in_every_output(tmp_path):
    paths = []
    for n, rec in enumerate(_records()):
        p = tmp_path / "scores" / f"{n}.json"
        write_score(rec, p)
        paths.append(str(p))
    common = {"methods": METHODS, "row_labels": LABELS, "controls": CONTROLS, "na": NA}
    tables = [{"family": "annotation", "params": {**common, "table": "table1_in_distribution", "datasets": ["pbmc"],
                                                  "seeds": [0, 1], "probe": False, "k": 5}},
              {"family": "integration", "params": {**common, "table": "table_integration", "datasets": ["batches"],
                                                   "seeds": [0, 1]}}]
    out = {ext: str(tmp_path / f"table_summary.{ext}") for ext in ("md", "csv", "tex")}
    out.update(png=str(tmp_path / "fig_summary.png"), pdf=str(tmp_path / "fig_summary.pdf"))
    s = S.summary_rule(Rule(input={"scores": paths}, output=out,
                            params={"tables": tables, "methods": METHODS, "row_labels": LABELS, "controls": CONTROLS}))
    md, csv, tex = (open(out[e]).read() for e in ("md", "csv", "tex"))
    for m, lab in LABELS.items():
        shown = lab + (f" ({T.CONTROL_MARK[CONTROLS[m]]})" if m in CONTROLS else "")
        assert f"| {shown} |" in md and f"\n{shown}," in csv and shown.replace("+", "+") in tex, m
    # the CSV's readout cells are the ranks of build_summary; controls in parentheses; bold only for methods
    head = csv.splitlines()[0].split(",")
    row = dict(zip(head, csv.splitlines()[4].split(",")))  # the Random row
    assert row["annotation / pbmc / kNN / macro-F1"] == "(4)" and row["annotation / rank"] == "—"
    assert "| **1** |" in md
    assert len(s.readouts) == 4 + 3  # kNN macro/micro, fine-tune macro/micro; bio, batch, total
    assert open(out["png"], "rb").read(4) == b"\x89PNG" and open(out["pdf"], "rb").read(4) == b"%PDF"
    from PIL import Image

    with Image.open(out["png"]) as im:  # no text of the figure runs into another (scjepa.report.style)
        assert im.info["text_overlaps"] == "0"


def test_not_scores_and_empty_columns_are_left_out():
    recs = [score_record("zero_shot", m, "pbmc", {"knn_macro_f1": v}) for m, v in (("a", 0.5), ("b", 0.6))]
    recs.append(score_record("zero_shot", "c", "pbmc", status="failed"))
    t = T.table1_in_distribution(recs, ["a", "b", "c"], ["pbmc"], probe=True, na=[{"task": "finetune"}])
    # micro-F1 and the probe: n/a for a and b, failed for c: kept (a failure is shown); fine-tune: n/a only, dropped
    sigma = T.make_table([score_record("bridge", m, "tc", {"sigma": 0.1}) for m in "ab"], ["a", "b", "c"], ["tc"],
                         "sigma", name="table_bridge_interpolation")
    s = S.build_summary([("annotation", t), ("dynamics", sigma)])
    assert [ro.label for ro in s.readouts] == ["pbmc / kNN / macro-F1", "pbmc / kNN / micro-F1",
                                               "pbmc / linear probe / macro-F1", "pbmc / linear probe / micro-F1"]
    assert s.ranks[1][0] == 1 and s.ranks[0][0] == 2 and s.status[2][0] == "failed"
    assert s.families == ["annotation", "dynamics"] and math.isnan(s.mean_rank[0][1])
