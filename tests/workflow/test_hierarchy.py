"""Hierarchy-corrected F1 switched on for the tiny config with a second --configfile: the zero-shot,
fine-tune and spatial records carry hier_* scores, Tables 1-3 show them, and a corrected score is never
below its plain one (the correction only turns wrong predictions into right ones)."""

import csv
import json

import pytest
import yaml

from wfhelpers import ROOT, TINY, snakemake

pytestmark = pytest.mark.slow

TABLES = ("table1_in_distribution", "table2_out_of_distribution", "table3_spatial")


def _rows(path):
    with open(path) as fh:
        return list(csv.reader(fh))


def test_hierarchy_switched_on_adds_records_and_columns(tmp_path):
    on = {"methods": ["scjepa"],
          "tasks": {"zero_shot": {"hierarchy": {"enabled": True, "ontology": "synthetic"}}}}
    (tmp_path / "hier.yaml").write_text(yaml.safe_dump(on))
    work = tmp_path / "work"
    targets = [f"results/tables/{t}.csv" for t in TABLES]
    snakemake("-d", work, "--configfile", TINY, tmp_path / "hier.yaml", "--cores", "2", *targets, cwd=ROOT)

    rec = json.loads((work / "results/scores/zero_shot/scjepa/id_new_donors.json").read_text())
    m = rec["metrics"]
    for readout in ("knn", "probe"):
        assert m[f"{readout}_hier_macro_f1"] >= m[f"{readout}_macro_f1"] - 1e-12
        assert m[f"{readout}_hier_micro_f1"] >= m[f"{readout}_micro_f1"] - 1e-12
        assert m[f"{readout}_hier_n_not_in_ontology"] == 0
    assert rec["config"]["hierarchy"]["ontology"].endswith("synthetic.obo")
    ft = json.loads((work / "results/scores/finetune/scjepa/id_new_donors/0.json").read_text())["metrics"]
    assert ft["hier_macro_f1"] >= ft["macro_f1"] - 1e-12
    sp = json.loads((work / "results/scores/spatial/scjepa/spatial_layers.json").read_text())["metrics"]
    assert sp["knn_hier_macro_f1"] >= sp["knn_macro_f1"] - 1e-12
    assert sp["transfer_hier_macro_f1"] >= sp["transfer_macro_f1"] - 1e-12

    for t in TABLES:
        rows = _rows(work / f"results/tables/{t}.csv")
        header = rows[0]
        hier = [i for i, h in enumerate(header) if "hier" in h]
        assert hier, f"{t}: no hierarchy-corrected column in {header}"
        for i in hier:  # the plain column of the same readout sits len(plain metrics) columns before it
            plain = header.index(header[i].replace("hier. ", ""))
            for row in rows[1:]:
                if row[i] in ("n/a", "") or row[plain] in ("n/a", ""):
                    continue
                assert float(row[i].split()[0].strip("*")) >= float(row[plain].split()[0].strip("*")) - 1e-9, (t, header[i], row)


def test_hierarchy_off_is_the_default_and_adds_nothing():
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert not cfg.get("tasks", {}).get("zero_shot", {}).get("hierarchy", {}).get("enabled", False)
    out = snakemake("-n", "--configfile", TINY, "--cores", "1", "-p", cwd=ROOT).stdout
    assert "synthetic.obo" not in out and "check_leakage" not in out
