"""Rehearsal of the paper's benchmark: config/paper.yaml end to end, offline, on miniatures of every paper
dataset shaped as their sources are (tests/workflow/paper_miniatures.py).

Census datasets are downloaded by the workflow's own code (locator -> HTTPS download, checksum, h5ad
check, concatenation of the lung studies) from a loopback server; only the Census *locator* is a stand-in.
The bridge datasets (url sources) are served by the same server at their own file names, only their ``url``
overridden: the 10x-zip reader, the checksum recorded on first download, the derived time and fate columns and
the column mappings are the paper config's own.
Local datasets (the scTab corpus export and the named-only sets) are overridden by path, as a user does.
The run goes to every table and figure with tiny training (methods and epochs cut by a second
--configfile; the datasets, their column mappings, splits, leakage check and hierarchy correction are the
paper config's own).

It fails if a paper dataset is dropped from the config or the tables, if a column mapping does not fit
the source's columns (preprocessing names the column), and if the leakage check is switched off or
bypassed (an in-corpus dataset re-split on its own is caught at run time).
"""

import csv
import functools
import http.server
import json
import os
import threading
import time

import anndata as ad
import pytest
import yaml

import paper_miniatures as mini
from wfhelpers import ROOT, snakemake

pytestmark = pytest.mark.slow

#: the paper's tables and figures -> the config entries that must feed them
PAPER = {
    "table1_in_distribution": ["sctab", "hlca", "pbmc", "tabula_sapiens"],
    "table2_out_of_distribution": ["brain_hit", "brain_non_neuronal", "circulating_immune", "cortical_development",
                                   "great_apes", "human_neocortex", "human_breast_cancer"],
    "table_integration": ["lung_integration"],
    "table3_spatial": ["merscope_neocortex"],
    "table_bridge_interpolation": ["eb_timecourse", "larry_hematopoiesis"],
    "table_bridge_fate": ["larry_hematopoiesis"],
    "table_bridge_perturbation": ["sciplex3"],
}
#: tables with hierarchy-corrected columns (the annotation tables)
HIERARCHY_TABLES = ("table1_in_distribution", "table2_out_of_distribution", "table3_spatial")
LUNG_STUDIES = 3  # Fig. 2: Travaglini 2020, Wang 2020, Melms 2021 as one dataset

TINY = {
    "preprocess": {"chunk_size": 200},
    "store": {"shard_size": 256, "buffer_shards": 2},
    "training": {"device": "cpu", "threads": 1, "batch_size": 64, "max_epochs": 1, "max_steps": 6, "val_every": 3,
                 "checkpoint_every": 3},
    "methods": ["scjepa", "scjepa_no_recon"],
    "method_params": {"scjepa": {"hparams": {"sigreg_directions": 16}},
                      "scjepa_no_recon": {"hparams": {"sigreg_directions": 16}}},
    "tasks": {"finetune": {"seeds": [0], "max_epochs": 1, "batch_size": 64},
              "integration": {"runs": 1, "kbet_per_label": False},
              "bridge": {"seeds": [0], "sigmas": [0.0, 0.1]}},
    "report": {"formats": ["png"], "dpi": 50},
}


@pytest.fixture(scope="module")
def paper():
    return yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, paper):
    root = tmp_path_factory.mktemp("paper")
    overrides = mini.build_all(root, paper)
    bridge = mini.build_bridge(root / "census", paper)
    mini.write_cell_ontology(root / "cl_miniature.obo")
    cfg = {**TINY, "datasets": overrides}
    cfg["tasks"] = {**TINY["tasks"], "zero_shot": {"hierarchy": {"ontology": str(root / "cl_miniature.obo")}}}
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root / "census"))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    cfg["datasets"].update({n: {"url": o["url"].format(base=base)} for n, o in bridge.items()})
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    standin = mini.write_census_standin(root / "standin")
    env = {"SCJEPA_CENSUS_STANDIN": f"http://127.0.0.1:{httpd.server_port}",
           "PYTHONPATH": os.pathsep.join([str(standin), os.environ.get("PYTHONPATH", "")]),
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield root
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        httpd.shutdown()


def _header(path):
    with open(path) as fh:
        return next(csv.reader(fh))


def test_config_names_every_paper_dataset_with_its_guards(paper):
    ds = paper["datasets"]
    for table, names in PAPER.items():
        for n in names:
            assert n in ds, f"{table}: paper dataset '{n}' is missing from config/paper.yaml"
            assert ds[n].get("description"), f"{n}: no description citing the paper"
    assert len(ds["lung_integration"]["census_dataset_ids"]) == LUNG_STUDIES
    assert ds["lung_integration"]["columns"]["batch"] == "dataset_id"  # study = batch
    assert paper["leakage"]["check"] is True, "the leakage check is switched off in config/paper.yaml"
    for n in mini.IN_CORPUS:
        assert ds[n].get("split_from", {}).get("dataset") == paper["corpus"], f"{n} is re-split on its own"
        assert ds[n]["census_version"] == "2023-05-15"
    assert paper["tasks"]["zero_shot"]["hierarchy"]["enabled"] is True


def test_rehearsal_runs_the_paper_config_to_every_table_and_figure(rehearsal):
    work = rehearsal / "work"
    t0 = time.perf_counter()
    snakemake("-d", work, "--configfile", "config/paper.yaml", rehearsal / "tiny.yaml", "--cores", "2", cwd=ROOT,
              timeout=900)
    print(f"rehearsal wall time: {time.perf_counter() - t0:.0f} s")
    for table, names in PAPER.items():
        header = " ".join(_header(work / f"results/tables/{table}.csv"))
        for n in names:
            assert n in header, f"{table}.csv has no column for paper dataset '{n}'"
        if table in HIERARCHY_TABLES:
            assert "hier." in header, f"{table}: no hierarchy-corrected column"
    for fig in ("fig2_integration", "fig3_spatial_merscope_neocortex", "fig4_training_dynamics"):
        assert (work / f"results/figures/{fig}.png").stat().st_size > 0
    report = json.loads((work / "results/data/leakage_check.json").read_text())
    assert set(PAPER["table2_out_of_distribution"]) | set(mini.IN_CORPUS) <= set(report["datasets"])
    for n in mini.IN_CORPUS:
        entry = report["datasets"][n]
        assert entry["leaking_cells"] == 0 and entry["n_test_cells"] > 0
        assert entry["n_test_donors_in_corpus"] == entry["n_test_donors"]  # test donors are corpus test donors
    pbmc = ad.read_h5ad(work / "results/data/pbmc/processed.h5ad", backed="r")
    assert (pbmc.obs["split"] == "excluded").sum() == 10  # the donor the corpus lacks is scored nowhere
    prov = json.loads((work / "resources/datasets/lung_integration/provenance.json").read_text())
    assert len(prov["parts"]) == LUNG_STUDIES
    rec = json.loads((work / "results/scores/zero_shot/scjepa/hlca.json").read_text())
    assert rec["metrics"]["knn_hier_macro_f1"] >= rec["metrics"]["knn_macro_f1"]
    # bridge datasets: checksums recorded on first download, real scores on every one of them
    lock = yaml.safe_load((work / "resources/checksums.lock.yaml").read_text())["datasets"]
    assert set(mini.BRIDGE) <= set(lock)
    for name in mini.BRIDGE:
        prov = json.loads((work / f"resources/datasets/{name}/provenance.json").read_text())
        assert prov["sha256_source"].startswith("recorded on first download"), prov
        rec = json.loads((work / f"results/scores/bridge/scjepa/{name}.json").read_text())
        assert rec["status"] == "ok", rec
    eb = json.loads((work / "results/scores/bridge/scjepa/eb_timecourse.json").read_text())
    assert sorted(eb["config"]["cells_per_time"]) == ["0.0", "1.0", "2.0", "3.0", "4.0"]  # 5 snapshots from samples
    larry = json.loads((work / "results/scores/bridge/scjepa/larry_hematopoiesis.json").read_text())
    assert "fate_accuracy" in larry["metrics"]  # the derived clonal fates are the ground truth
    assert any(k.startswith("l2_means") for k in
               json.loads((work / "results/scores/bridge/scjepa/sciplex3.json").read_text())["metrics"])


def test_an_in_corpus_dataset_resplit_on_its_own_is_caught(rehearsal):
    work = rehearsal / "work"
    (rehearsal / "bypass.yaml").write_text(yaml.safe_dump({"datasets": {"hlca": {"split_from": None}}}))
    proc = snakemake("-d", work, "--configfile", "config/paper.yaml", rehearsal / "tiny.yaml", rehearsal / "bypass.yaml",
                     "--cores", "2", "results/data/leakage_check.json", cwd=ROOT, check=False, timeout=600)
    assert proc.returncode != 0
    log_file = work / "logs/check_leakage.log"
    log = log_file.read_text() if log_file.exists() else ""
    assert "dataset 'hlca'" in log and "test cells" in log, proc.stdout[-3000:]


def test_a_wrong_column_mapping_fails_naming_the_column(rehearsal):
    work = rehearsal / "work"
    (rehearsal / "wrong.yaml").write_text(yaml.safe_dump({"datasets": {"pbmc": {"columns": {"donor": "donor"}}}}))
    proc = snakemake("-d", work, "--configfile", "config/paper.yaml", rehearsal / "tiny.yaml", rehearsal / "wrong.yaml",
                     "--cores", "2", "results/data/pbmc/processed.h5ad", cwd=ROOT, check=False, timeout=600)
    assert proc.returncode != 0
    log_file = work / "logs/preprocess/pbmc.log"
    log = log_file.read_text() if log_file.exists() else ""
    assert "column 'donor'" in log and "datasets.pbmc" in log, proc.stdout[-3000:]
