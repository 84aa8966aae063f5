"""scjepa.ontology: OBO loading, scTab's hierarchy correction, its F1 (hand-computed), the synthetic
lineage as OBO, and the pinned Cell Ontology download (against a local HTTP server on loopback)."""

from __future__ import annotations

import hashlib
import http.server
import threading

import numpy as np
import pandas as pd
import pytest

from scjepa.data import sources, synthetic
from scjepa.data.sources import ChecksumError, DownloadError, fetch_cell_ontology
from scjepa.errors import InputError
from scjepa.ontology import (
    hierarchy_correct,
    label_ids_from_obs,
    load_obo,
    score_hierarchical,
    write_obo,
    write_synthetic_ontology,
)

# cell
# ├── T cell
# │   ├── CD4 T cell
# │   │   └── naive CD4 T cell
# │   └── CD8 T cell
# ├── B cell
# └── thymocyte-like cell   (is_a cell, part_of T cell: part_of must NOT make it a T cell subtype)
# plus an obsolete term
OBO = """format-version: 1.2
data-version: test/releases/2024-01-01
ontology: test

[Term]
id: T:0000001
name: cell

[Term]
id: T:0000002
name: T cell
is_a: T:0000001 ! cell

[Term]
id: T:0000003
name: CD4 T cell
is_a: T:0000002 ! T cell

[Term]
id: T:0000004
name: CD8 T cell
is_a: T:0000002 ! T cell

[Term]
id: T:0000005
name: naive CD4 T cell
is_a: T:0000003 ! CD4 T cell

[Term]
id: T:0000006
name: B cell
is_a: T:0000001 ! cell

[Term]
id: T:0000007
name: thymocyte-like cell
is_a: T:0000001 ! cell
relationship: part_of T:0000002 ! T cell

[Term]
id: T:0000008
name: old cell
is_obsolete: true

[Typedef]
id: part_of
name: part of
"""
CELL, T, CD4, CD8, NCD4, B, THY, OLD = (f"T:000000{i}" for i in range(1, 9))
NAMES = {CELL: "cell", T: "T cell", CD4: "CD4 T cell", CD8: "CD8 T cell", NCD4: "naive CD4 T cell",
         B: "B cell", THY: "thymocyte-like cell", OLD: "old cell"}


@pytest.fixture()
def obo_path(tmp_path):
    path = tmp_path / "test.obo"
    path.write_text(OBO)
    return path


@pytest.fixture()
def onto(obo_path):
    return load_obo(obo_path)


# --------------------------------------------------------------------------------------------
# the hierarchy


def test_load_obo_terms_and_version(onto, obo_path):
    assert onto.terms == {CELL, T, CD4, CD8, NCD4, B, THY}  # the obsolete term is left out
    assert onto.data_version == "test/releases/2024-01-01"
    assert onto.names[NCD4] == "naive CD4 T cell"
    assert onto.source == str(obo_path)


def test_descendants_and_ancestors_follow_is_a_transitively(onto):
    assert onto.descendants(T) == {CD4, CD8, NCD4}
    assert onto.descendants(CD4) == {NCD4}
    assert onto.descendants(CD8) == frozenset()
    assert onto.descendants(CELL) == {T, CD4, CD8, NCD4, B, THY}
    assert onto.ancestors(NCD4) == {CD4, T, CELL}
    assert onto.ancestors(CELL) == frozenset()
    assert onto.is_descendant(NCD4, of=T) and not onto.is_descendant(T, of=NCD4)


def test_part_of_is_not_followed_unless_asked(onto, obo_path):
    assert THY not in onto.descendants(T)  # scTab: subclass only
    with_part_of = load_obo(obo_path, relations=("is_a", "part_of"))
    assert with_part_of.descendants(T) == {CD4, CD8, NCD4, THY}


def test_unknown_term_is_named(onto):
    with pytest.raises(InputError, match=r"test.obo': term 'T:0000008' is not in the ontology \(7 terms"):
        onto.descendants(OLD)


def test_load_obo_errors(tmp_path, obo_path):
    with pytest.raises(InputError, match="does not exist"):
        load_obo(tmp_path / "missing.obo")
    with pytest.raises(InputError, match=r"no edge uses relation\(s\) \['isa'\]"):
        load_obo(obo_path, relations=("isa",))
    html = tmp_path / "page.obo"
    html.write_text("<html><body>Not Found</body></html>\n")
    with pytest.raises(InputError, match="page.obo"):
        load_obo(html)


# --------------------------------------------------------------------------------------------
# the correction


@pytest.mark.parametrize(
    "truth, pred, corrected, case",
    [
        (CD4, T, T, "parent of the truth: wrong, not corrected"),
        (T, CD4, T, "child of the truth: corrected"),
        (CD4, CD8, CD8, "sibling: wrong, not corrected"),
        (T, NCD4, T, "grandchild: corrected"),
        (NCD4, T, T, "grandparent: wrong, not corrected"),
        (T, B, B, "unrelated: wrong"),
        (B, B, B, "exact: right"),
        (CELL, B, CELL, "anything under the root counts for a root label"),
        (T, THY, THY, "part_of T cell is not a T cell subtype"),
    ],
)
def test_hierarchy_correct_cases(onto, truth, pred, corrected, case):
    assert hierarchy_correct([truth], [pred], onto).tolist() == [corrected], case


# The hand-computed example:
#   row  truth  pred   corrected  why
#   1    T      CD4    T          child
#   2    T      nCD4   T          grandchild
#   3    T      B      B          unrelated
#   4    CD4    T      T          parent: stays wrong
#   5    CD4    CD4    CD4        exact
#   6    B      B      B          exact
#   7    B      T      T          unrelated
Y_TRUE = [T, T, T, CD4, CD4, B, B]
Y_PRED = [CD4, NCD4, B, T, CD4, B, T]
Y_CORR = [T, T, B, T, CD4, B, T]


def test_hierarchy_correct_vector(onto):
    assert hierarchy_correct(Y_TRUE, Y_PRED, onto).tolist() == Y_CORR


def _check_scores(m):
    # Plain, labels = union {T, CD4, nCD4, B}:
    #   T: 3 true, predicted at rows 4, 7, none right -> F1 0; CD4: P 1/2 R 1/2 -> 1/2;
    #   nCD4: never true, predicted once -> 0; B: P 1/2 R 1/2 -> 1/2. macro 1/4, micro 2/7.
    assert m["macro_f1"] == pytest.approx(0.25)
    assert m["micro_f1"] == pytest.approx(2 / 7)
    assert m["accuracy"] == pytest.approx(2 / 7)
    # Corrected, labels = {T, CD4, B}:
    #   T: predicted rows 1, 2, 4, 7; right 1, 2 -> P 1/2, R 2/3 -> F1 4/7;
    #   CD4: predicted row 5 only -> P 1, R 1/2 -> 2/3; B: P 1/2, R 1/2 -> 1/2.
    #   macro (4/7 + 2/3 + 1/2) / 3 = 73/126; micro = 4 right of 7.
    assert m["hier_macro_f1"] == pytest.approx(73 / 126)
    assert m["hier_micro_f1"] == pytest.approx(4 / 7)
    assert m["hier_accuracy"] == pytest.approx(4 / 7)
    assert m["n_corrected"] == 2
    assert m["n_not_in_ontology"] == 0
    assert m["n_cells"] == 7


def test_score_hierarchical_on_term_ids(onto):
    _check_scores(score_hierarchical(Y_TRUE, Y_PRED, onto))


def test_score_hierarchical_on_dataset_labels(onto):
    # Labels as a dataset spells them, mapped to term ids: the same scores.
    y_true = [NAMES[t] for t in Y_TRUE]
    y_pred = [NAMES[t] for t in Y_PRED]
    _check_scores(score_hierarchical(y_true, y_pred, onto, label_ids={v: k for k, v in NAMES.items()}))


def test_two_labels_of_one_term_count_as_the_same(onto):
    ids = {"T cell": T, "T lymphocyte": T, "B cell": B}
    m = score_hierarchical(["T cell", "B cell"], ["T lymphocyte", "B cell"], onto, label_ids=ids)
    assert m["hier_accuracy"] == 1.0 and m["accuracy"] == 0.5 and m["n_corrected"] == 1


def test_unknown_labels_are_an_error_naming_them(onto):
    with pytest.raises(InputError, match=r"1 term id\(s\) not in the ontology.*'T:0000008'"):
        hierarchy_correct([T, OLD], [CD4, T], onto)  # obsolete = not in the ontology
    with pytest.raises(InputError, match=r"test.obo': 1 label\(s\) not in the ontology.*'unknown' \(term 'unknown'\)"):
        score_hierarchical(["T cell", "unknown"], ["CD4 T cell", "T cell"], onto,
                           label_ids={"T cell": T, "CD4 T cell": CD4, "unknown": "unknown"})


def test_unknown_labels_scored_uncorrected_and_counted(onto):
    # row 1: child of the truth -> corrected; row 2: truth unknown -> prediction kept (wrong);
    # row 3: prediction unknown -> kept (wrong), even though "T cell" would be no subtype anyway.
    y_true, y_pred = [T, "X:1", CD4], [CD4, T, "X:2"]
    assert hierarchy_correct(y_true, y_pred, onto, missing="uncorrected").tolist() == [T, T, "X:2"]
    m = score_hierarchical(y_true, y_pred, onto, missing="uncorrected")
    assert m["n_not_in_ontology"] == 2 and m["n_corrected"] == 1
    assert m["hier_accuracy"] == pytest.approx(1 / 3) and m["accuracy"] == 0.0


def test_label_missing_from_the_map_is_an_error(onto):
    with pytest.raises(InputError, match=r"label_ids.*'NK cell'"):
        score_hierarchical(["T cell"], ["NK cell"], onto, label_ids={"T cell": T})


def test_bad_policy_and_shapes(onto):
    with pytest.raises(InputError, match="missing"):
        hierarchy_correct([T], [T], onto, missing="ignore")
    with pytest.raises(ValueError, match="one length"):
        hierarchy_correct([T, T], [T], onto)


def test_label_ids_from_obs():
    obs = pd.DataFrame({"cell_type": ["T cell", "B cell", "T cell"],
                        "cell_type_ontology_term_id": ["CL:0000084", "CL:0000236", "CL:0000084"]})
    assert label_ids_from_obs(obs, "cell_type", "cell_type_ontology_term_id") == {
        "T cell": "CL:0000084", "B cell": "CL:0000236"}
    obs.loc[2, "cell_type_ontology_term_id"] = "CL:0000789"
    with pytest.raises(InputError, match=r"label 'T cell' has several term ids \['CL:0000084', 'CL:0000789'\]"):
        label_ids_from_obs(obs, "cell_type", "cell_type_ontology_term_id")
    with pytest.raises(InputError, match="column 'cl_id'"):
        label_ids_from_obs(obs, "cell_type", "cl_id")


# --------------------------------------------------------------------------------------------
# the synthetic world's lineage


@pytest.mark.parametrize("n_types", [2, 7, 16, 40])
def test_synthetic_terms_name_every_generated_type(n_types):
    world = synthetic.World(n_genes=20, n_types=n_types, seed=0)
    terms = synthetic.cell_type_terms(n_types)
    types = terms.loc[terms["level"].isin(["type", "novel type"]), "name"]
    assert set(types) == set(world.cell_types) | set(world.novel_types(5)[0])
    assert terms["term_id"].is_unique and terms["name"].is_unique
    # ids depend on the name only: a term of a smaller world has the same id here (novel types are
    # left out: a world without their lineage files them under its first lineage, by another name)
    small = synthetic.cell_type_terms(2)
    small = small[small["level"] != "novel type"]
    ids = synthetic.cell_type_term_ids(n_types)
    assert [ids[n] for n in small["name"]] == small["term_id"].tolist()


def test_synthetic_ontology_round_trip(tmp_path):
    ids = write_synthetic_ontology(tmp_path / "synthetic.obo")
    onto = load_obo(tmp_path / "synthetic.obo")
    assert set(ids.values()) == onto.terms
    assert onto.data_version.startswith("scjepa-synthetic/")
    lineage = ids["T cell"]
    assert {onto.names[t] for t in onto.descendants(lineage)} == {
        "T cell/CD4 naive", "T cell/CD4 memory", "T cell/CD8 naive", "T cell/exhausted"}
    assert onto.ancestors(ids["B cell/plasma"]) == {ids["B cell"], ids["cell"]}
    # a coarse (lineage) label with a subtype predicted is corrected; the reverse is not
    m = score_hierarchical(["T cell", "T cell/CD4 naive"], ["T cell/CD4 naive", "T cell"], onto, label_ids=ids)
    assert m["accuracy"] == 0.0 and m["hier_accuracy"] == 0.5


def test_synthetic_data_labels_are_all_mapped():
    ids = synthetic.cell_type_term_ids()
    for kind in ("in_distribution", "out_of_distribution"):
        adata = synthetic.generate(kind, 300, n_genes=30, seed=1)
        assert set(adata.obs["cell_type"].astype(str)) <= set(ids), kind


def test_write_obo_rejects_what_obo_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="cannot be written"):
        write_obo([{"term_id": "X:1", "name": "a ! b", "parent_id": None}], tmp_path / "x.obo",
                  ontology="x", data_version="1")
    with pytest.raises(ValueError, match="not a term"):
        write_obo([{"term_id": "X:1", "name": "a", "parent_id": "X:9"}], tmp_path / "x.obo",
                  ontology="x", data_version="1")
    assert not (tmp_path / "x.obo").exists()


# --------------------------------------------------------------------------------------------
# the pinned Cell Ontology download (loopback HTTP server)

CL_VERSION = sources.CELL_ONTOLOGY_VERSION
CL_BYTES = OBO.replace("data-version: test/releases/2024-01-01",
                       f"data-version: cl/releases/{CL_VERSION}/cl.obo").encode()
PAGES = {
    "/cl.obo": CL_BYTES,
    "/page.obo": b"<!DOCTYPE html><html><body>rate limited</body></html>\n",
    "/old.obo": CL_BYTES.replace(CL_VERSION.encode(), b"2021-08-10"),
}


@pytest.fixture(scope="module")
def server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            body = PAGES.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def test_default_url_is_the_pinned_release():
    assert sources.CELL_ONTOLOGY_URL.format(version=CL_VERSION) == (
        f"https://github.com/obophenotype/cell-ontology/releases/download/v{CL_VERSION}/cl.obo")


def test_fetch_cell_ontology_records_and_loads(server, tmp_path):
    dest = tmp_path / "ontology" / "cl.obo"
    rec = fetch_cell_ontology(dest, url=f"{server}/cl.obo", progress=False, retries=0)
    assert dest.read_bytes() == CL_BYTES
    assert rec == {"source": "url", "origin": f"{server}/cl.obo", "url": f"{server}/cl.obo",
                   "cl_version": CL_VERSION, "data_version": f"cl/releases/{CL_VERSION}/cl.obo",
                   "sha256": hashlib.sha256(CL_BYTES).hexdigest(), "bytes": len(CL_BYTES)}
    assert load_obo(dest).descendants(T) == {CD4, CD8, NCD4}
    # the recorded hash pins later downloads
    fetch_cell_ontology(tmp_path / "again.obo", url=f"{server}/cl.obo", sha256=rec["sha256"], progress=False)


@pytest.mark.parametrize(
    "page, kwargs, error, pattern",
    [
        ("/cl.obo", {"sha256": "0" * 64}, ChecksumError, "sha256 mismatch"),
        ("/page.obo", {}, DownloadError, "not an OBO file"),
        ("/old.obo", {}, DownloadError, f"release 'cl/releases/2021-08-10/cl.obo', not the pinned {CL_VERSION}"),
        ("/missing.obo", {}, DownloadError, "HTTP 404"),
    ],
)
def test_fetch_cell_ontology_failures_leave_nothing(server, tmp_path, page, kwargs, error, pattern):
    folder = tmp_path / "ontology"
    with pytest.raises(error, match=pattern):
        fetch_cell_ontology(folder / "cl.obo", url=f"{server}{page}", progress=False, retries=0, **kwargs)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_fetch_cell_ontology_uses_the_recorded_hash(server, tmp_path, monkeypatch):
    monkeypatch.setitem(sources.CELL_ONTOLOGY_SHA256, CL_VERSION, "f" * 64)
    with pytest.raises(ChecksumError):
        fetch_cell_ontology(tmp_path / "cl.obo", url=f"{server}/cl.obo", progress=False, retries=0)
    assert not (tmp_path / "cl.obo").exists()
