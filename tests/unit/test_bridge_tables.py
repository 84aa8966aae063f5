"""Bridge tables: methods and baseline rows, absolute values ± sd, columns read from the records."""

from __future__ import annotations

from scjepa.report.bridge_tables import table_bridge_fate, table_bridge_interpolation, table_bridge_perturbation
from scjepa.report.tables import to_markdown


def _rec(method, dataset, metrics, unavailable=None, status="ok"):
    r = {"task": "bridge", "method": method, "dataset": dataset, "seed": None, "status": status,
         "metrics": metrics, "config": {"seeds": [0, 1, 2]}}
    if unavailable:
        r["metrics_unavailable"] = unavailable
    return r


def _tc(bridge, base=1.0):
    m = {}
    for e, v in (("bridge", bridge), ("exact_ot", bridge + 0.05), ("random", 0.9), ("prev", base), ("next", 1.2),
                 ("expr_pcs", 0.7), ("best_snapshot", base)):
        for k in (1, 2):
            m[f"w1_{e}_t{k}"], m[f"w1_{e}_t{k}_sd"] = v, 0.01
        m[f"w1_{e}"], m[f"w1_{e}_sd"] = v, 0.02
        m[f"w1_{e}_rel_best_snapshot"], m[f"w1_{e}_rel_best_snapshot_sd"] = v / base, 0.01
    m.update(sigma=0.1, sigma_expr_pcs=0.05)
    return m


def test_interpolation_table_has_method_and_baseline_rows_with_absolute_w1():
    recs = [_rec("pca", "tc", _tc(0.8)), _rec("scvi", "tc", _tc(0.6)),
            _rec("harmony", "tc", {}, status="n/a")]
    t = table_bridge_interpolation(recs, ["pca", "scvi", "harmony"], ["tc"], row_labels={"scvi": "scVI"})
    assert t.row_labels[:3] == ["pca", "scVI", "harmony"]
    assert t.row_labels[3:] == ["previous snapshot", "next snapshot", "random coupling",
                                "expression PCs (bridge in the reference space)"]
    heads = [c.header[1] for c in t.columns]
    assert heads == ["W1 held-out t1", "W1 held-out t2", "W1 mean", "/ best snapshot", "exact OT (σ=0) W1", "σ (·ŝ)"]
    scvi = t.cells[1]
    assert scvi[2].mean == 0.6 and scvi[2].sd == 0.02 and scvi[2].n == 3 and scvi[2].best  # below every baseline
    assert t.cells[2][0].status == "n/a"
    prev = t.cells[3]
    assert prev[2].mean == 1.0 and prev[4].status == "n/a" and prev[5].status == "n/a"
    assert t.cells[6][5].mean == 0.05 and not any(row[5].best for row in t.cells)  # the row's own σ, never bold
    assert not t.cells[6][2].best and t.cells[6][2].mean == 0.7
    md = to_markdown(t)
    assert "0.600 ± 0.020" in md and "previous snapshot" in md


def test_fate_table_has_brier_and_a_chance_row_and_no_truth_cells():
    ok = {"fate_accuracy": 0.8, "fate_chance": 0.5, "fate_brier": 0.3, "fate_brier_chance": 0.5,
          "fate_logloss": 0.6, "fate_logloss_chance": 0.69}
    recs = [_rec("pca", "a", ok), _rec("pca", "b", {"w1_bridge": 1.0},
                                       {"fate_accuracy": "no fate column", "fate_brier": "no fate column"})]
    t = table_bridge_fate(recs, ["pca"], ["a", "b"])
    assert t.row_labels[-1].startswith("chance")
    assert [c.header[1] for c in t.columns[:3]] == ["accuracy", "Brier", "log-loss"]
    assert t.cells[0][1].mean == 0.3 and t.cells[1][1].mean == 0.5
    assert t.cells[0][3].status == "no truth" and t.cells[0][4].status == "no truth"


def test_perturbation_table_has_identity_mean_shift_and_observed_rows():
    m = {}
    for metric in ("l2_means_ct", "mmd_ref_ct", "w2_ref_ct", "r2_means_ct_top50"):
        for suffix, v in (("", 1.0), ("_identity", 2.0), ("_meanshift", 1.5), ("_observed", 0.5)):
            m[metric + suffix], m[metric + suffix + "_sd"] = v, 0.1
    t = table_bridge_perturbation([_rec("pca", "p", m)], ["pca"], ["p"])
    assert t.row_labels[1:] == ["identity (control cells)", "mean shift",
                                "observed (other half of the perturbed cells; floor)"]
    assert [row[0].mean for row in t.cells] == [1.0, 2.0, 1.5, 0.5]
    assert t.cells[3][0].best  # the floor is lowest


def test_rows_of_methods_that_do_not_serve_the_bridge_are_na_and_chance_has_an_accuracy():
    ok = {"fate_accuracy": 0.8, "fate_chance": 0.5, "fate_brier": 0.3, "fate_brier_chance": 0.5}
    t = table_bridge_fate([_rec("pca", "a", ok)], ["pca", "labels"], ["a"], na=[{"method": "labels"}])
    assert t.cells[1][0].status == "n/a" and t.cells[2][0].mean == 0.5
