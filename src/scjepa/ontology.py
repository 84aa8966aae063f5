"""Cell-type ontologies and scTab's hierarchy-corrected annotation scores.

**The correction (as scTab scores cell-type predictions).** Datasets are annotated at different
granularity: one study says "T cell" where another says "CD8-positive, alpha-beta T cell". scTab
(Fischer et al.; its evaluation notebooks and ``docs/classification-evaluation-metrics.md``)
therefore counts a prediction as right when it is the true label *or a subtype of it*, and as wrong
when it is a supertype of the true label (the author gave a finer label than the prediction) or
anything else. Concretely, scTab builds a boolean matrix over its label set whose entry (t, p) says
"p is t or a descendant of t", and, cell by cell, replaces a prediction p by the true label t where
that entry is set; macro-/micro-F1 are then computed on the replaced predictions with scikit-learn.
:func:`hierarchy_correct` does exactly that on term ids, and :func:`score_hierarchical` reports the
scores with and without it.

How scTab's matrix is defined, and how we follow it:

* **Relation.** scTab asks Ubergraph for ``rdfs:subClassOf`` between Cell Ontology classes: the
  reasoned, transitive subclass closure, i.e. the OBO ``is_a`` relation followed any number of steps.
  ``part_of``, ``develops_from`` and other relations are *not* followed. We read the release's
  ``cl.obo`` (whose ``is_a`` lines already carry the reasoner's inferred subclass links) and follow
  ``is_a`` transitively; :func:`load_obo` takes other relations only if asked to (not scTab's rule).
* **Reflexive.** The matrix has ones on its diagonal, so a prediction equal to the truth stays
  correct. Where several dataset labels map to one term, a prediction of the same term as the truth
  counts as correct too (with one label per term, as in scTab, that is plain equality).
* **Label set.** scTab keeps only descendants that are among its 164 labels; since predictions are
  always labels, restricting the descendants to the label set changes nothing, so we do not.
* **Scores.** Macro-F1 averages over the union of true and predicted labels (scikit-learn's default,
  as scTab's ``classification_report`` without ``labels``); micro-F1 = accuracy for single-label data.

**Labels the ontology does not know** (a misspelt id, an obsolete term, a dataset-specific label such
as "unknown"): with ``missing="error"`` (default) an :class:`~scjepa.errors.InputError` names them and
the ontology file; with ``missing="uncorrected"`` the cells whose true or predicted term is unknown
keep their prediction (scored as plain F1 would) and are counted (``n_not_in_ontology``). A dataset
label absent from the ``label_ids`` map is always an error: the map is configuration, and a gap in it
is a mistake, not data.

Ontologies come from OBO files (read with ``obonet`` into a ``networkx`` graph): the pinned Cell
Ontology release (:func:`scjepa.data.sources.fetch_cell_ontology`) for real data, and the embedded
world's lineage (:func:`write_synthetic_ontology`) for the default run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from scjepa.errors import InputError
from scjepa.knn import score_annotation  # the project's one definition of the F1 scores

#: The relations scTab's correction follows: subclass only.
SCTAB_RELATIONS = ("is_a",)
MISSING_POLICIES = ("error", "uncorrected")
_SHOWN = 5  # unknown labels named in an error message


@dataclass(eq=False)
class Ontology:
    """A term hierarchy: ``graph`` has an edge child -> parent for each followed relation.

    ``terms``: the declared, non-obsolete term ids; ``names``: id -> name; ``source``: the file it
    was read from; ``data_version``: the OBO header's ``data-version`` (None if absent);
    ``relations``: the relations behind the edges (scTab: ``("is_a",)``).
    """

    graph: object  # networkx.DiGraph
    terms: frozenset
    names: Mapping[str, str]
    source: str
    data_version: str | None = None
    relations: tuple[str, ...] = SCTAB_RELATIONS
    _descendants: dict = field(default_factory=dict, repr=False)

    def __contains__(self, term_id) -> bool:
        return term_id in self.terms

    def __len__(self) -> int:
        return len(self.terms)

    def __repr__(self) -> str:
        return (f"Ontology({len(self)} terms, relations={list(self.relations)}, source='{self.source}', "
                f"data_version={self.data_version!r})")

    def check(self, term_id: str) -> None:
        """InputError naming ``term_id`` and the ontology file unless the term is declared."""
        if term_id not in self.terms:
            raise InputError(f"term '{term_id}' is not in the ontology ({self._describe()})", path=self.source)

    def descendants(self, term_id: str) -> frozenset:
        """Every term below ``term_id`` (children, grandchildren, ...), itself excluded."""
        import networkx as nx

        self.check(term_id)
        if term_id not in self._descendants:
            # edges point child -> parent, so the terms *below* a term are its graph ancestors
            self._descendants[term_id] = frozenset(nx.ancestors(self.graph, term_id)) & self.terms
        return self._descendants[term_id]

    def ancestors(self, term_id: str) -> frozenset:
        """Every term above ``term_id`` (parents, grandparents, ..., the roots), itself excluded."""
        import networkx as nx

        self.check(term_id)
        return frozenset(nx.descendants(self.graph, term_id)) & self.terms

    def is_descendant(self, term_id: str, of: str) -> bool:
        """True if ``term_id`` lies strictly below ``of``."""
        return term_id in self.descendants(of)

    def _describe(self) -> str:
        version = f", data-version {self.data_version}" if self.data_version else ""
        return f"{len(self)} terms{version}"


def load_obo(path: str | os.PathLike, *, relations: Sequence[str] = SCTAB_RELATIONS) -> Ontology:
    """Read an OBO file into an :class:`Ontology` following ``relations`` (default: ``is_a`` only).

    Obsolete terms are left out (``obonet``'s default), so a label that names one is "not in the
    ontology". A relation that no edge of the file uses is an InputError (a typo such as ``isa``
    would otherwise silently give an ontology without hierarchy).
    """
    import networkx as nx
    import obonet

    path = Path(path)
    if not path.is_file():
        raise InputError("does not exist (ontology OBO file)", path=path)
    try:
        multi = obonet.read_obo(str(path))
    except Exception as exc:  # obonet raises plain exceptions on malformed stanzas
        raise InputError(f"is not a readable OBO file ({type(exc).__name__}: {exc})", path=path) from exc
    # obonet also adds a node for every id an edge points to; a declared term has a stanza, hence
    # tags (a name, ...) or edges of its own
    terms = frozenset(n for n, data in multi.nodes(data=True) if data or multi.out_degree(n))
    if not terms:
        raise InputError("declares no [Term] stanza: is it an OBO file?", path=path)
    relations = tuple(relations)
    used = {key for _, _, key in multi.edges(keys=True)}
    unused = [r for r in relations if r not in used]
    if unused and used:
        raise InputError(f"no edge uses relation(s) {unused}; the file's relations: {sorted(used)}", path=path)
    graph = nx.DiGraph()
    graph.add_nodes_from(terms)
    graph.add_edges_from((child, parent) for child, parent, key in multi.edges(keys=True) if key in relations)
    names = {n: str(multi.nodes[n].get("name", "")) for n in terms}
    version = multi.graph.get("data-version")
    return Ontology(graph=graph, terms=terms, names=names, source=str(path),
                    data_version=str(version) if version is not None else None, relations=relations)


def _check_policy(missing: str) -> None:
    if missing not in MISSING_POLICIES:
        raise InputError(f"must be one of {MISSING_POLICIES}, got {missing!r}", key="missing")


def _shown(items: Iterable[str]) -> str:
    items = sorted(set(items))
    return ", ".join(items[:_SHOWN]) + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _unknown_error(unknown: Iterable[str], ontology: Ontology, what: str) -> InputError:
    """``unknown``: the offending labels, already quoted for the message."""
    unknown = set(unknown)
    shown = _shown(unknown)
    return InputError(
        f"{len(unknown)} {what} not in the ontology ({ontology._describe()}): {shown}. Check the label -> "
        "term id map and the ontology release, or score such cells uncorrected (missing='uncorrected')",
        path=ontology.source,
    )


def hierarchy_correct(y_true: Sequence[str], y_pred: Sequence[str], ontology: Ontology, *,
                      missing: str = "error") -> np.ndarray:
    """scTab's correction: a prediction of a descendant of the true term becomes the true term.

    ``y_true``, ``y_pred``: (N,) term ids. Returns the corrected predictions, (N,) str. A prediction
    of the truth's parent (or any ancestor), sibling or unrelated term is left as it is (wrong).
    ``missing``: what to do with ids the ontology does not declare, see the module docstring.
    """
    _check_policy(missing)
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {y_true.shape} and {y_pred.shape}")
    terms = list(ontology.terms)
    known = np.isin(y_true, terms) & np.isin(y_pred, terms)
    if not known.all() and missing == "error":
        bad = set(y_true[~np.isin(y_true, terms)]) | set(y_pred[~np.isin(y_pred, terms)])
        raise _unknown_error({f"'{b}'" for b in bad}, ontology, "term id(s)")
    out = y_pred.copy()
    rows = np.flatnonzero(known & (y_true != y_pred))
    if rows.size:
        # one ontology look-up per distinct (truth, prediction) pair, not per cell
        pairs, inverse = np.unique(np.stack([y_true[rows], y_pred[rows]], axis=1), axis=0, return_inverse=True)
        hit = np.array([p in ontology.descendants(t) for t, p in pairs], dtype=bool)
        fix = rows[hit[inverse.ravel()]]
        out[fix] = y_true[fix]
    return out


def score_hierarchical(y_true: Sequence, y_pred: Sequence, ontology: Ontology, *,
                       label_ids: Mapping[str, str] | None = None, missing: str = "error") -> dict[str, float]:
    """Annotation scores without and with scTab's hierarchy correction.

    ``y_true``, ``y_pred``: (N,) labels as the dataset spells them; ``label_ids``: label -> term id
    (None: the labels are term ids). Returns floats: ``macro_f1``, ``micro_f1``, ``weighted_f1``,
    ``accuracy`` (plain, :func:`scjepa.knn.score_annotation`), the same four prefixed
    ``hier_`` after the correction, ``n_corrected`` (cells whose wrong prediction the correction
    made right), ``n_not_in_ontology`` (cells scored uncorrected because their true or predicted term
    is unknown; always 0 with ``missing="error"``) and ``n_cells``.

    The correction is applied in term space and written back in label space: a corrected cell's
    prediction becomes its true label, so both score sets are over the same label vocabulary.
    """
    _check_policy(missing)
    y_true = np.asarray(y_true).astype(str)
    y_pred = np.asarray(y_pred).astype(str)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {y_true.shape} and {y_pred.shape}")
    plain = score_annotation(y_true, y_pred)
    if label_ids is None:
        ids_true, ids_pred = y_true, y_pred
    else:
        ids = {str(k): str(v) for k, v in dict(label_ids).items()}
        unmapped = sorted((set(y_true) | set(y_pred)) - set(ids))
        if unmapped:
            raise InputError(f"{len(unmapped)} label(s) have no term id in the label -> term id map: "
                             f"{_shown(repr(u) for u in unmapped)}", key="label_ids")
        ids_true = np.array([ids[v] for v in y_true], dtype=object).astype(str)
        ids_pred = np.array([ids[v] for v in y_pred], dtype=object).astype(str)
    terms = list(ontology.terms)
    unknown = ~(np.isin(ids_true, terms) & np.isin(ids_pred, terms))
    if unknown.any() and missing == "error":
        labels, ids_all = np.concatenate([y_true, y_pred]), np.concatenate([ids_true, ids_pred])
        off = ~np.isin(ids_all, terms)
        # name the dataset's labels (with their term ids where a map was given), not bare ids
        bad = {f"'{lab}'" if label_ids is None else f"'{lab}' (term '{tid}')"
               for lab, tid in zip(labels[off], ids_all[off])}
        raise _unknown_error(bad, ontology, "label(s)")
    corrected_ids = hierarchy_correct(ids_true, ids_pred, ontology, missing="uncorrected")
    right = (corrected_ids == ids_true) & (y_pred != y_true) & ~unknown
    y_corr = np.where(right, y_true, y_pred)
    hier = score_annotation(y_true, y_corr)
    return {
        **plain,
        **{f"hier_{k}": v for k, v in hier.items()},
        "n_corrected": float(right.sum()),
        "n_not_in_ontology": float(unknown.sum()),
        "n_cells": float(len(y_true)),
    }


def label_ids_from_obs(obs, label_key: str, id_key: str, *, path=None) -> dict[str, str]:
    """Label -> term id from two obs columns (e.g. CELLxGENE's ``cell_type`` and
    ``cell_type_ontology_term_id``). A label paired with two different ids is an InputError naming it.
    """
    for col in (label_key, id_key):
        if col not in obs:
            raise InputError(f"obs has no column '{col}'", path=path, column=col)
    pairs = obs[[label_key, id_key]].astype(str).drop_duplicates()
    clash = pairs[pairs[label_key].duplicated(keep=False)]
    if len(clash):
        lab = clash[label_key].iloc[0]
        ids = sorted(clash.loc[clash[label_key] == lab, id_key])
        raise InputError(f"label '{lab}' has several term ids {ids}", path=path, column=id_key)
    return dict(zip(pairs[label_key], pairs[id_key]))


# --------------------------------------------------------------------------------------------
# the workflow's switch: hierarchy-corrected scores beside the plain ones in the score records

#: the hierarchy-corrected scores a record carries, after the readout's prefix (``knn_``, ``probe_``,
#: ``transfer_`` or none for fine-tuning): ``knn_hier_macro_f1`` etc.
HIER_METRICS = ("hier_macro_f1", "hier_micro_f1", "hier_weighted_f1", "hier_accuracy", "hier_n_corrected",
                "hier_n_not_in_ontology")


@dataclass(eq=False)
class Hierarchy:
    """An ontology and the policy for labels it lacks, as ``tasks.zero_shot.hierarchy`` configures them.

    Labels become term ids through the dataset's ``cell_type_id`` obs column where it has one
    (``columns.cell_type_id``: CELLxGENE's ``cell_type_ontology_term_id``), else through the
    ontology's term names (CELLxGENE's ``cell_type`` values are Cell Ontology names; the synthetic
    world's lineage names its terms after the generator's labels).
    """

    ontology: Ontology
    missing: str = "error"
    label_key: str = "cell_type"
    id_key: str = "cell_type_id"

    def label_ids(self, *obs_frames, path=None) -> dict[str, str]:
        """Label -> term id from the obs of every dataset involved (query, and reference if another)."""
        ids: dict[str, str] = {}
        by_name: dict[str, str] | None = None
        for obs in obs_frames:
            if self.id_key in obs:
                pairs = label_ids_from_obs(obs, self.label_key, self.id_key, path=path)
            else:
                if by_name is None:
                    by_name = {}
                    for tid, name in self.ontology.names.items():
                        by_name.setdefault(name, tid)
                # a label no term is named after maps to itself: "not in the ontology" (an error, or
                # uncorrected with missing='uncorrected')
                pairs = {str(v): by_name.get(str(v), str(v)) for v in obs[self.label_key].astype(str).unique()}
            for label, tid in pairs.items():
                if ids.setdefault(label, tid) != tid:
                    raise InputError(f"label '{label}' has term id '{ids[label]}' in one dataset and '{tid}' in "
                                     "another", path=path, column=self.id_key)
        return ids

    def scores(self, y_true, y_pred, label_ids: Mapping[str, str], *, prefix: str = "") -> dict[str, float]:
        """``{prefix}hier_*`` (:data:`HIER_METRICS`) for one readout's predictions."""
        full = score_hierarchical(y_true, y_pred, self.ontology, label_ids=label_ids, missing=self.missing)
        out = {f"{prefix}{k}": full[k] for k in ("hier_macro_f1", "hier_micro_f1", "hier_weighted_f1", "hier_accuracy")}
        out[f"{prefix}hier_n_corrected"] = full["n_corrected"]
        out[f"{prefix}hier_n_not_in_ontology"] = full["n_not_in_ontology"]
        return out

    def config(self) -> dict:
        """The record's description of the correction (what produced the hier_* scores)."""
        return {"ontology": self.ontology.source, "data_version": self.ontology.data_version,
                "relations": list(self.ontology.relations), "missing": self.missing,
                "rule": "a prediction of a descendant of the true term counts as the true term (scTab)"}


def load_hierarchy(settings: Mapping | None, obo_path=None) -> Hierarchy | None:
    """The score scripts' entry: ``settings`` = ``tasks.zero_shot.hierarchy`` (None or not ``enabled``:
    None, no hier_* scores), ``obo_path`` the ontology file the workflow provides."""
    if not settings or not settings.get("enabled"):
        return None
    if not obo_path:
        raise InputError("hierarchy-corrected F1 is switched on but no ontology file was given",
                         key="tasks.zero_shot.hierarchy.ontology")
    missing = settings.get("missing", "error")
    _check_policy(missing)
    return Hierarchy(load_obo(obo_path), missing=missing)


# --------------------------------------------------------------------------------------------
# writing OBO (the synthetic world's lineage)


def write_obo(terms, dest: str | os.PathLike, *, ontology: str, data_version: str) -> None:
    """Write terms as an OBO 1.2 file (atomically): one ``[Term]`` per row, ``is_a`` its parent.

    ``terms``: a DataFrame (or rows) with ``term_id``, ``name`` and ``parent_id`` (None for roots).
    Names must be one line without ``!``, ``{`` or ``}`` (OBO comment and qualifier syntax).
    """
    import pandas as pd

    from scjepa.io import write_text

    df = pd.DataFrame(terms)
    for col in ("term_id", "name", "parent_id"):
        if col not in df:
            raise ValueError(f"terms need a '{col}' column")
    if df["term_id"].duplicated().any():
        raise ValueError(f"duplicate term id '{df.loc[df['term_id'].duplicated(), 'term_id'].iloc[0]}'")
    lines = ["format-version: 1.2", f"data-version: {data_version}", f"ontology: {ontology}", ""]
    names = dict(zip(df["term_id"], df["name"]))
    for tid, name, parent in zip(df["term_id"], df["name"], df["parent_id"]):
        if any(c in str(name) for c in "\n!{}"):
            raise ValueError(f"term name {name!r} cannot be written to OBO")
        lines += ["[Term]", f"id: {tid}", f"name: {name}"]
        if parent is not None and not (isinstance(parent, float) and np.isnan(parent)):
            if parent not in names:
                raise ValueError(f"term '{tid}' has parent '{parent}', which is not a term")
            lines.append(f"is_a: {parent} ! {names[parent]}")
        lines.append("")
    write_text("\n".join(lines), dest)


def write_synthetic_ontology(dest: str | os.PathLike, *, n_types: int = 16,
                             n_novel_types: int | None = None) -> dict[str, str]:
    """Write the embedded world's cell-type lineage (root -> lineage -> type) as OBO; return name -> id.

    The names are those of ``obs["cell_type"]`` of the synthetic data sets (and the lineage and root
    names), so the returned map is the ``label_ids`` of :func:`score_hierarchical` for them.
    ``n_types``: the generator's option of that name; ``n_novel_types``: how many of the
    out-of-distribution study's novel subtypes to include (None: all the generator knows).
    """
    from scjepa.data import synthetic

    terms = (synthetic.cell_type_terms(int(n_types)) if n_novel_types is None
             else synthetic.cell_type_terms(int(n_types), int(n_novel_types)))
    write_obo(terms, dest, ontology=synthetic.ONTOLOGY_PREFIX.lower(),
              data_version=f"scjepa-synthetic/generator-{synthetic.GENERATOR_VERSION}/n_types-{int(n_types)}")
    return dict(zip(terms["name"], terms["term_id"]))


__all__ = ["Ontology", "SCTAB_RELATIONS", "MISSING_POLICIES", "HIER_METRICS", "Hierarchy", "load_hierarchy",
           "load_obo", "hierarchy_correct", "score_hierarchical", "label_ids_from_obs", "write_obo",
           "write_synthetic_ontology"]


def ontology_rule(rule) -> dict:
    """Rules ``fetch_cell_ontology`` / ``write_synthetic_ontology``: the OBO file (``output.obo``) of
    hierarchy-corrected F1 and its provenance (``output.provenance``)."""
    import logging

    from scjepa.io import write_json

    if rule.params["kind"] == "cell_ontology":
        from scjepa.data.sources import fetch_cell_ontology

        record = fetch_cell_ontology(rule.output["obo"], version=rule.wildcards["version"])
    else:
        ids = write_synthetic_ontology(rule.output["obo"], n_types=int(rule.params["n_types"]))
        record = {"source": "synthetic", "origin": "scjepa.ontology.write_synthetic_ontology",
                  "n_types": int(rule.params["n_types"]), "n_terms": len(ids)}
    logging.getLogger(__name__).info("ontology: %s", record)
    write_json(record, rule.output["provenance"])
    return record
