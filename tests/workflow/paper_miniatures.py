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


# ---- the bridge benchmark's real datasets (served as url sources by the loopback server) ---------------------

#: the Embryoid Body samples of Moon et al. 2019 (Mendeley v6n743h5ng), one 10x directory per time window
EB_SAMPLES = ("T0_1A", "T2_3B", "T4_5C", "T6_7D", "T8_9E")
#: CoSpar's LARRY state annotations (a subset of its 11 states)
LARRY_STATES = ("undiff", "Neutrophil", "Monocyte", "Baso", "Erythroid")


def _trajectory_counts(rng, n, k, n_steps, n_genes=N_GENES):
    """Counts drifting from one gene program to the next as the step k goes 0 .. n_steps - 1."""
    X = rng.poisson(0.6, (n, n_genes)).astype(np.float32)
    w = k / max(n_steps - 1, 1)
    X[:, :10] += rng.poisson(6.0 * (1 - w), (n, 10))
    X[:, 10:20] += rng.poisson(6.0 * w, (n, 10))
    return X


def eb_zip(path, *, n_per_sample=60, seed=0):
    """The Mendeley archive as downloaded: a zip holding ``scRNAseq.zip``, which holds ``scRNAseq/<sample>/``
    with Cell Ranger v2 files (``matrix.mtx`` genes x cells, ``genes.tsv`` id + symbol, ``barcodes.tsv``)."""
    import io
    import zipfile

    from scipy.io import mmwrite

    rng = np.random.default_rng(seed)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        for k, sample in enumerate(EB_SAMPLES):
            counts = _trajectory_counts(rng, n_per_sample, k, len(EB_SAMPLES))
            buf = io.BytesIO()
            mmwrite(buf, sp.coo_matrix(counts.T.astype(np.int64)))
            zf.writestr(f"scRNAseq/{sample}/matrix.mtx", buf.getvalue())
            zf.writestr(f"scRNAseq/{sample}/genes.tsv", "".join(f"{g}\t{s}\n" for g, s in zip(GENE_IDS, SYMBOLS)))
            zf.writestr(f"scRNAseq/{sample}/barcodes.tsv",
                        "".join(f"{''.join(rng.choice(list('ACGT'), 14))}-1\n" for _ in range(n_per_sample)))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("scRNAseq.zip", inner.getvalue())
        zf.writestr("README.txt", "Embryoid body data for PHATE (miniature)\n")


def larry_h5ad(path, *, seed=0):
    """CoSpar's ``LARRY_adata_preprocessed.h5ad``: library-size-normalised X (not counts, not logged), mouse gene
    symbols as var names, obs ``time_info`` ('2'/'4'/'6') and ``state_info``, clones in ``obsm['X_clone']``
    (cells x clones, binary CSR), a 2-D embedding in ``obsm['X_emb']``."""
    rng = np.random.default_rng(seed)
    n_clones = 40
    fates = rng.choice(LARRY_STATES[1:], n_clones)
    rows, times, states, clones = [], [], [], []
    for day, n_per_clone in (("2", 2), ("4", 2), ("6", 4)):
        for c in range(n_clones):
            for _ in range(n_per_clone):
                k = {"2": 0, "4": 1, "6": 2}[day]
                committed = day == "6" or (day == "4" and rng.random() < 0.5)
                state = fates[c] if committed and rng.random() < 0.85 else ("undiff" if day != "6" else
                                                                             rng.choice(LARRY_STATES[1:]))
                x = _trajectory_counts(rng, 1, k, 3)[0]
                x[PROGRAMS_LARRY[state]] += rng.poisson(4.0, len(PROGRAMS_LARRY[state]))
                rows.append(x), times.append(day), states.append(state), clones.append(c)
    X = np.vstack(rows)
    X = X / X.sum(axis=1, keepdims=True) * 5000  # normalised to one total per cell, as the published file is
    n = len(rows)
    clone = sp.csr_matrix((np.ones(n), (np.arange(n), clones)), shape=(n, n_clones))
    obs = pd.DataFrame({"time_info": pd.Categorical(times), "state_info": pd.Categorical(states)},
                       index=[f"{''.join(rng.choice(list('ACGT'), 16))}-{i}" for i in range(n)])
    var = pd.DataFrame(index=[s.capitalize() for s in SYMBOLS])  # mouse-style 'Gene0'
    ad.AnnData(X=sp.csr_matrix(X.astype(np.float32)), obs=obs, var=var,
               obsm={"X_clone": clone, "X_emb": rng.normal(size=(n, 2))}).write_h5ad(path)


PROGRAMS_LARRY = {s: np.arange(30 + 6 * i, 36 + 6 * i) for i, s in enumerate(LARRY_STATES)}


def sciplex3_h5ad(path, *, seed=0):
    """scPerturb's ``SrivatsanTrapnell2020_sciplex3.h5ad``: raw UMI counts in X, gene symbols as var names with
    ``ensembl_id``, obs ``perturbation`` ('control' = vehicle), ``cell_line``, ``dose_value``, ``dose_unit``,
    ``time``, ``celltype``, ``ncounts`` and scPerturb's other annotation columns."""
    rng = np.random.default_rng(seed)
    lines = {"A549": "alveolar basal epithelial cells", "K562": "lymphoblasts", "MCF7": "mammary epithelial cells"}
    drugs = ["control", "Dacinostat", "Givinostat", "Flavopiridol HCl"]
    line_prog = _programs(list(lines), seed=11)
    rows, obs_rows = [], []
    for line in lines:
        for d, drug in enumerate(drugs):
            for _ in range(30):
                x = rng.poisson(0.6, N_GENES).astype(np.float32)
                x[line_prog[line]] += rng.poisson(6.0, 8)
                if d:
                    x[40 + 5 * d: 45 + 5 * d] += rng.poisson(5.0, 5)
                rows.append(x)
                obs_rows.append({"perturbation": drug, "cell_line": line, "celltype": lines[line],
                                 "dose_value": 0.0 if not d else float(rng.choice([10, 100, 1000, 10000])),
                                 "dose_unit": "nM", "time": 24.0, "replicate": rng.choice(["rep1", "rep2"]),
                                 "perturbation_type": "drug", "organism": "human", "ncounts": float(x.sum())})
    obs = pd.DataFrame(obs_rows, index=[f"sciplex3_{i}" for i in range(len(rows))])
    for c in ("perturbation", "cell_line", "celltype", "dose_unit", "replicate", "perturbation_type", "organism"):
        obs[c] = pd.Categorical(obs[c])
    var = pd.DataFrame({"ensembl_id": GENE_IDS}, index=pd.Index(SYMBOLS, name="gene_symbol"))
    ad.AnnData(X=sp.csr_matrix(np.vstack(rows)), obs=obs, var=var).write_h5ad(path)


#: the bridge datasets of config/paper.yaml -> (file name under the server's bridge/ folder, writer)
BRIDGE = {"eb_timecourse": ("eb_v6n743h5ng.zip", eb_zip),
          "larry_hematopoiesis": ("LARRY_adata_preprocessed.h5ad", larry_h5ad),
          "sciplex3": ("SrivatsanTrapnell2020_sciplex3.h5ad", sciplex3_h5ad)}


def build_bridge(served: Path, paper: dict) -> dict:
    """Write the bridge datasets under ``served/bridge/`` and return overrides pointing their ``url`` at
    ``{base}/bridge/<file>`` (``{base}``: the loopback server, filled in once it runs). Only the url changes: the
    format, checksum mode, derivations and column mappings are config/paper.yaml's own."""
    folder = served / "bridge"
    folder.mkdir(parents=True, exist_ok=True)
    overrides = {}
    for name, (fname, write) in BRIDGE.items():
        assert paper["datasets"][name]["source"] == "url", name
        write(folder / fname)
        overrides[name] = {"url": "{base}/bridge/" + fname}
    return overrides
