"""Miniatures of every dataset of config/paper.yaml, shaped as their real sources are.

* CELLxGENE source h5ads (Census datasets, and the named-only sets a user downloads from CELLxGENE):
  log-normalised ``X``, counts in ``raw.X``, var index = Ensembl ids with ``feature_name``, obs with the
  schema's columns (``cell_type``, ``cell_type_ontology_term_id``, ``donor_id``, ``assay``, ``tissue``,
  ``suspension_type``, ``is_primary_data``; ``dataset_id`` as the Census adds it) plus the authors' own
  columns that the config maps (HLCA's ``dataset``, the neocortex ``type``).
* The scTab corpus as the export describes it: counts in ``X``, var ``feature_id``/``feature_name``, obs
  ``cell_type``, ``cell_type_ontology_term_id``, ``dataset_id``, ``donor_id``, ``tech_sample``. HLCA,
  PBMC and Tabula Sapiens are inside it (their donors are corpus donors), as in the real corpus.
* Out-of-distribution sets carry cell types the corpus lacks.
* MERSCOPE: one section, gene symbols as var names, a 40-gene panel, ``center_x``/``center_y``, ``fov``
  and the authors' ``type``.

Census datasets are served as files to download; :func:`write_census_standin` writes a stand-in for the
Census *locator* only (``cellxgene_census.get_source_h5ad_uri``), which points at a loopback server; the
download, checksum and column handling are the workflow's own.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

N_GENES = 120
GENE_IDS = [f"ENSG{9000000 + i:011d}" for i in range(N_GENES)]
SYMBOLS = [f"GENE{i}" for i in range(N_GENES)]

#: the Cell Ontology terms the miniatures use (real ids and names) and their is_a parents among them
TERMS = {
    "CL:0000000": ("cell", None),
    "CL:0000738": ("leukocyte", "CL:0000000"),
    "CL:0000084": ("T cell", "CL:0000738"),
    "CL:0000624": ("CD4-positive, alpha-beta T cell", "CL:0000084"),
    "CL:0000625": ("CD8-positive, alpha-beta T cell", "CL:0000084"),
    "CL:0000236": ("B cell", "CL:0000738"),
    "CL:0000576": ("monocyte", "CL:0000738"),
    "CL:0000623": ("natural killer cell", "CL:0000738"),
    "CL:0000940": ("mucosal invariant T cell", "CL:0000084"),
    "CL:0000798": ("gamma-delta T cell", "CL:0000084"),
    "CL:0000125": ("glial cell", "CL:0000000"),
    "CL:0000127": ("astrocyte", "CL:0000125"),
    "CL:0000128": ("oligodendrocyte", "CL:0000125"),
    "CL:0000129": ("microglial cell", "CL:0000125"),
    "CL:0000540": ("neuron", "CL:0000000"),
    "CL:0000066": ("epithelial cell", "CL:0000000"),
    "CL:0002062": ("type I pneumocyte", "CL:0000066"),
    "CL:0002063": ("type II pneumocyte", "CL:0000066"),
}
ID_OF = {name: tid for tid, (name, _) in TERMS.items()}
CORPUS_TYPES = ["T cell", "CD4-positive, alpha-beta T cell", "CD8-positive, alpha-beta T cell", "B cell", "monocyte",
                "natural killer cell", "type I pneumocyte", "type II pneumocyte"]
NEOCORTEX_TYPES = ["EN-L2_3-IT", "IN-MGE-SST", "Astrocyte-Protoplasmic", "OPC"]

N_CORPUS_DONORS = 9  # per in-corpus dataset (the corpus split, seed 1, gives each of them train, val and test donors)
#: Census ids of config/paper.yaml (read from it by the test) whose datasets are inside the corpus
IN_CORPUS = ("hlca", "pbmc", "tabula_sapiens")


def write_cell_ontology(path: Path) -> None:
    lines = ["format-version: 1.2", "data-version: cl/releases/2023-07-20/cl.owl", "ontology: cl", ""]
    for tid, (name, parent) in TERMS.items():
        lines += ["[Term]", f"id: {tid}", f"name: {name}"] + ([f"is_a: {parent} ! {TERMS[parent][0]}"] if parent else [])
        lines.append("")
    path.write_text("\n".join(lines))


def _counts(rng, labels, genes_of_type, n_genes=N_GENES):
    """Negative-binomial-ish counts with one program of 8 marker genes per label."""
    X = rng.poisson(0.6, (len(labels), n_genes)).astype(np.float32)
    for i, lab in enumerate(labels):
        X[i, genes_of_type[lab]] += rng.poisson(6.0, len(genes_of_type[lab]))
    return X


def _programs(types, seed=0):
    rng = np.random.default_rng(seed)
    return {t: rng.choice(N_GENES, 8, replace=False) for t in types}


PROGRAMS = _programs(CORPUS_TYPES + ["mucosal invariant T cell", "gamma-delta T cell", "astrocyte", "oligodendrocyte",
                                     "microglial cell", "neuron"] + NEOCORTEX_TYPES)


def _obs(rng, labels, dataset_id, donors, *, extra=None, index_prefix="BC"):
    n = len(labels)
    obs = pd.DataFrame({
        "cell_type": pd.Categorical(labels),
        "donor_id": pd.Categorical(np.asarray(donors)),
        "assay": pd.Categorical(rng.choice(["10x 3' v3", "10x 3' v2"], n)),
        "tissue": pd.Categorical(["lung"] * n),
        "suspension_type": pd.Categorical(["cell"] * n),
        "is_primary_data": np.ones(n, dtype=bool),
        "dataset_id": pd.Categorical([dataset_id] * n),
    }, index=[f"{index_prefix}{i:05d}" for i in range(n)])
    if all(lab in ID_OF for lab in labels):
        obs.insert(1, "cell_type_ontology_term_id", pd.Categorical([ID_OF[lab] for lab in labels]))
    for k, v in (extra or {}).items():
        obs[k] = pd.Categorical(v)
    return obs


def cellxgene_h5ad(path, dataset_id, types, donors, *, n_per_donor=30, seed=0, extra=None, genes=None):
    """A CELLxGENE source h5ad: log-normalised X, counts in raw.X, var index Ensembl ids + feature_name."""
    rng = np.random.default_rng(seed)
    donor_of = np.repeat(donors, n_per_donor)
    labels = rng.choice(types, len(donor_of))
    genes = np.arange(N_GENES) if genes is None else np.asarray(genes)
    counts = _counts(rng, labels, PROGRAMS)[:, genes]
    extra = {k: (v(rng, len(labels)) if callable(v) else v) for k, v in (extra or {}).items()}
    obs = _obs(rng, labels, dataset_id, donor_of, extra=extra)
    var = pd.DataFrame({"feature_name": pd.Categorical(np.asarray(SYMBOLS)[genes]),
                        "feature_biotype": pd.Categorical(["gene"] * len(genes))},
                       index=pd.Index(np.asarray(GENE_IDS)[genes]))
    lib = counts.sum(1, keepdims=True)
    a = ad.AnnData(X=sp.csr_matrix(np.log1p(counts / np.maximum(lib, 1) * 1e4).astype(np.float32)), obs=obs, var=var)
    a.raw = ad.AnnData(X=sp.csr_matrix(counts), var=var)
    a.write_h5ad(path)
    return a


def corpus_h5ad(path, in_corpus: dict[str, str], *, seed=0):
    """The scTab corpus export: the in-corpus datasets' donors plus one more dataset, counts in X."""
    rng = np.random.default_rng(seed)
    frames, blocks = [], []
    for name, ds_id in [*in_corpus.items(), ("other", "0f000000-0000-0000-0000-000000000000")]:
        donors = np.repeat([f"{name}_donor{i}" for i in range(N_CORPUS_DONORS)], 12)
        labels = rng.choice(CORPUS_TYPES, len(donors))
        blocks.append(_counts(rng, labels, PROGRAMS))
        obs = pd.DataFrame({"cell_type": labels, "cell_type_ontology_term_id": [ID_OF[x] for x in labels],
                            "dataset_id": ds_id, "donor_id": donors, "assay": "10x 3' v3",
                            "tech_sample": [f"{ds_id}_{d}" for d in donors], "is_primary_data": True})
        frames.append(obs)
    obs = pd.concat(frames, ignore_index=True)
    obs.index = [f"{i}" for i in range(len(obs))]  # the Census' soma_joinid
    for c in obs.columns:
        if obs[c].dtype == object:
            obs[c] = pd.Categorical(obs[c])
    var = pd.DataFrame({"feature_id": GENE_IDS, "feature_name": SYMBOLS}, index=[str(i) for i in range(N_GENES)])
    ad.AnnData(X=sp.csr_matrix(np.vstack(blocks)), obs=obs, var=var).write_h5ad(path)


def merscope_h5ad(path, *, seed=0):
    """One MERSCOPE section: a 40-gene panel by symbol, coordinates, fields of view, the authors' types."""
    rng = np.random.default_rng(seed)
    n = 240
    labels = rng.choice(NEOCORTEX_TYPES, n)
    panel = np.sort(np.unique(np.concatenate([PROGRAMS[t] for t in NEOCORTEX_TYPES] + [np.arange(10)])))[:40]
    counts = _counts(rng, labels, PROGRAMS)[:, panel]
    x, y = rng.uniform(0, 2000, n), rng.uniform(0, 1500, n)
    obs = pd.DataFrame({"type": pd.Categorical(labels), "center_x": x, "center_y": y,
                        "fov": pd.Categorical([f"fov{int(xx // 500)}" for xx in x]),
                        "sample": pd.Categorical(["UCSF2018003MFG"] * n),
                        "dataset_id": pd.Categorical(["wang2025_merscope"] * n),
                        "donor_id": pd.Categorical(["UCSF2018003"] * n)}, index=[f"cell{i}" for i in range(n)])
    ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=np.asarray(SYMBOLS)[panel])).write_h5ad(path)


def breast_cancer_h5ad(path, *, seed=0):
    """Chromium FFPE breast cancer as the conversion describes it: counts in X, one donor, split groups."""
    rng = np.random.default_rng(seed)
    types = ["B cell", "T cell", "epithelial cell"]
    labels = rng.choice(types, 200)
    prog = _programs(types, seed=7)
    counts = _counts(rng, labels, prog)
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels), "donor_id": pd.Categorical(["donor1"] * 200),
                        "dataset_id": pd.Categorical(["janesick2023_chromium_ffpe"] * 200),
                        "split_group": pd.Categorical([f"g{i}" for i in rng.integers(0, 10, 200)])},
                       index=[f"AAAC{i:05d}-1" for i in range(200)])
    var = pd.DataFrame({"feature_name": SYMBOLS}, index=GENE_IDS)
    ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var).write_h5ad(path)


def write_census_standin(folder: Path) -> Path:
    """A ``cellxgene_census`` with only the locator: ``get_source_h5ad_uri`` -> the loopback server named by
    ``SCJEPA_CENSUS_STANDIN`` (``http://127.0.0.1:<port>``), file ``<version>/<dataset_id>.h5ad``."""
    pkg = folder / "cellxgene_census"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(
        '"""Stand-in for the Census locator (tests): files are served by a loopback HTTP server."""\n'
        "import os\n\n\n"
        'def get_source_h5ad_uri(dataset_id, *, census_version="stable"):\n'
        '    base = os.environ["SCJEPA_CENSUS_STANDIN"]\n'
        '    return {"uri": f"{base}/{census_version}/{dataset_id}.h5ad", "s3_region": None}\n'
    )
    return folder


def build_all(root: Path, paper: dict) -> dict:
    """Every dataset of ``paper`` (config/paper.yaml): Census ones under ``root/census/<version>/<id>.h5ad``,
    local ones under ``root/local/<name>.h5ad``. Returns the override of the local paths."""
    ds = paper["datasets"]
    census, local = root / "census", root / "local"
    local.mkdir(parents=True, exist_ok=True)
    in_corpus = {n: ds[n]["census_dataset_id"] for n in IN_CORPUS}
    corpus_h5ad(local / "sctab.h5ad", in_corpus)
    overrides = {"sctab": {"path": str(local / "sctab.h5ad")}}

    def census_path(name, ds_id=None):
        folder = census / str(ds[name].get("census_version", "2023-05-15"))
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{ds_id or ds[name]['census_dataset_id']}.h5ad"

    # inside the corpus: the corpus' donors (PBMC and Tabula Sapiens also one donor the corpus lacks, as scTab's
    # filters leave some out), the corpus' types. HLCA re-split on its own would put a corpus train donor in its
    # test split (split seed 1): the rehearsal's bypass test relies on it
    for seed, name in enumerate(IN_CORPUS):
        extra = {"dataset": lambda rng, n: rng.choice(["study_a", "study_b"], n)} if name == "hlca" else None
        donors = [f"{name}_donor{i}" for i in range(N_CORPUS_DONORS + (name != "hlca"))]
        cellxgene_h5ad(census_path(name), in_corpus[name], CORPUS_TYPES, donors, n_per_donor=10, seed=10 + seed,
                       extra=extra)
    # out of distribution: types the corpus lacks
    ood = {"brain_non_neuronal": ["astrocyte", "oligodendrocyte", "microglial cell", "T cell"],
           "circulating_immune": ["mucosal invariant T cell", "gamma-delta T cell", "B cell", "natural killer cell"],
           "brain_hit": ["astrocyte", "neuron", "oligodendrocyte"],
           "cortical_development": ["astrocyte", "microglial cell", "oligodendrocyte", "neuron"],
           "great_apes": ["neuron", "astrocyte", "microglial cell"]}
    for seed, (name, types) in enumerate(ood.items()):
        donors = [f"{name}_donor{i}" for i in range(5)]
        if ds[name]["source"] == "census":
            cellxgene_h5ad(census_path(name), ds[name]["census_dataset_id"], types, donors, n_per_donor=24, seed=20 + seed)
        else:
            cellxgene_h5ad(local / f"{name}.h5ad", f"{name}-cellxgene-id", types, donors, n_per_donor=24, seed=20 + seed)
            overrides[name] = {"path": str(local / f"{name}.h5ad")}
    cellxgene_h5ad(local / "human_neocortex.h5ad", "wang2025-snmultiome", ["neuron", "astrocyte"],
                   [f"neo_donor{i}" for i in range(5)], n_per_donor=24, seed=30,
                   extra={"type": lambda rng, n: rng.choice(NEOCORTEX_TYPES, n)})
    overrides["human_neocortex"] = {"path": str(local / "human_neocortex.h5ad")}
    breast_cancer_h5ad(local / "human_breast_cancer.h5ad")
    overrides["human_breast_cancer"] = {"path": str(local / "human_breast_cancer.h5ad")}
    merscope_h5ad(local / "merscope_neocortex.h5ad")
    overrides["merscope_neocortex"] = {"path": str(local / "merscope_neocortex.h5ad")}
    # Fig. 2: three lung studies with partly different genes, each its own donors
    for seed, ds_id in enumerate(ds["lung_integration"]["census_dataset_ids"]):
        genes = np.arange(N_GENES)[seed * 3: N_GENES - (2 - seed) * 3]
        cellxgene_h5ad(census_path("lung_integration", ds_id), ds_id,
                       ["type I pneumocyte", "type II pneumocyte", "monocyte", "T cell"],
                       [f"lung{seed}_donor{i}" for i in range(3)], n_per_donor=30, seed=40 + seed, genes=genes)
    return overrides
