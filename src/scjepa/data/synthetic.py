"""The embedded corpus: a deterministic generator of single-cell count data with known ground truth.

One :class:`World` (deterministic from ``world_seed``) holds the shared biology: genes, gene
programs, a lineage hierarchy of cell types, technologies and studies. :func:`generate` draws a
data set of one *kind* (``KINDS``) from it, so a model pretrained on ``"pretrain"`` meets the same
genes, programs and cell types in every other kind.

Generative model, per cell ``i`` and gene ``g``::

    z_i      = centroid[type_i] + spread[type_i] * N(0, I_K)          true state, obsm["X_true"]
               (+ time-course path / perturbation shift / OOD shift, per kind)
    logit_ig = base_g + (z_i + donor_shift_d) @ W[:, g]                programs: low-rank latent
               + donor_lfc_dg + strength * (study_lfc_sg + tech_lfc_tg)  donor and batch effects
               + cycling_i * cycle_g (+ perturbation response, per kind)
    p_i      = (1 - a_s) softmax(logit_i) + a_s * ambient_profile_s       relative expression
    L_i      = lib_median * capture_s * size[type_i] * LogNormal(0, lib_sd)   library size (UMIs)
    x_ig     ~ NB(mean = L_i p_ig, inverse dispersion theta_g)          counts

Cell types form a hierarchy (lineage centroid + subtype offset), so sibling types are close and
rare types (~1 %) are hard. Batch effects are gene-specific multiplicative (study and technology)
plus capture efficiency and ambient RNA; ``batch_strength`` scales them.

What makes the world hard the way real data is hard (generator version 2; each a documented option,
never a handicap of one method):

* **uninformative genes** (``informative_fraction``): only that share of genes carries program
  loadings; the rest vary with baseline, donor, batch and sampling noise only;
* **subtypes that differ by small programs** (``subtype_programs``): a subtype's offset from its
  lineage lives in a few programs, not in all of them, so siblings are close;
* **nonlinear technology effects**: each technology saturates highly expressed genes
  (``mu / (1 + mu / capacity)``, a gene-specific capacity) and its study's stress genes respond
  with a lineage-specific strength (a batch x cell-type interaction), so no per-gene shift removes
  the batch effect;
* **technology dropout** (``dropout``): a drawn count is lost with probability
  ``1 / (1 + exp(slope * (log mu - log midpoint)))`` (Splatter's logistic dropout), with a
  technology-specific midpoint; ``dropout`` scales the midpoint (0 = off).

Cells are drawn in fixed blocks of ``BLOCK_SIZE`` cells, each from its own seeded stream, so a data
set of ``n`` cells is a prefix of one of ``m > n`` cells, and :func:`generate_chunks` (bounded
memory) concatenates to exactly :func:`generate`. Counts are drawn exactly from the NB by
inverse CDF on the sparse non-zero entries (most entries are decided zero by one comparison).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp

KINDS = (
    "pretrain",
    "in_distribution",
    "out_of_distribution",
    "integration",
    "spatial",
    "timecourse",
    "perturbation",
)
#: cells per random stream; fixed, so data sets are prefix-consistent and chunking is exact
BLOCK_SIZE = 1024
GENERATOR_VERSION = 2

_KIND_TAG = {
    "pretrain": "pt",
    "in_distribution": "id",
    "out_of_distribution": "ood",
    "integration": "int",
    "spatial": "sp",
    "timecourse": "tc",
    "perturbation": "pb",
}

# lineage -> subtypes; the world takes types round-robin over lineages (rank 0 of every lineage
# first), so any n_types covers many lineages and siblings appear from n_types > 7 on.
_CATALOG: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("T cell", ("CD4 naive", "CD4 memory", "CD8 naive", "CD8 effector", "regulatory", "gamma-delta", "MAIT")),
    ("B cell", ("naive", "memory", "plasma")),
    ("NK cell", ("CD56 bright", "CD56 dim")),
    (
        "Myeloid",
        ("classical monocyte", "non-classical monocyte", "conventional DC", "plasmacytoid DC", "macrophage"),
    ),
    ("Progenitor", ("HSC", "erythroid progenitor", "megakaryocyte progenitor")),
    ("Stromal", ("fibroblast", "endothelial", "pericyte")),
    ("Epithelial", ("basal", "luminal", "secretory")),
)
# subtypes that only the out-of-distribution study has
_NOVEL_CATALOG = (
    ("T cell", "exhausted"),
    ("Myeloid", "lipid-associated macrophage"),
    ("Epithelial", "transitional"),
    ("B cell", "age-associated"),
    ("Stromal", "myofibroblast"),
)
# technology -> (short name for batch labels, relative capture efficiency)
TECHNOLOGIES: dict[str, tuple[str, float]] = {
    "10x 3' v3": ("10xv3", 1.0),
    "10x 3' v2": ("10xv2", 0.55),
    "10x 5' v1": ("10x5v1", 0.75),
    "10x 5' v2": ("10x5v2", 0.85),
    "Drop-seq": ("dropseq", 0.3),
    "Seq-Well": ("seqwell", 0.35),
    "MERFISH": ("merfish", 0.3),
}
# technology -> (median saturation capacity in UMIs of one gene, dropout midpoint in expected UMIs):
# older chemistries saturate earlier and lose more lowly expressed transcripts
TECH_NONLINEARITY: dict[str, tuple[float, float]] = {
    "10x 3' v3": (300.0, 0.25),
    "10x 3' v2": (150.0, 0.5),
    "10x 5' v1": (200.0, 0.4),
    "10x 5' v2": (250.0, 0.3),
    "Drop-seq": (80.0, 0.8),
    "Seq-Well": (100.0, 0.7),
    "MERFISH": (120.0, 0.2),
}
DROPOUT_SLOPE = 1.5
#: the world's defaults for the two generator-version-2 options that shape the World itself
INFORMATIVE_FRACTION, SUBTYPE_PROGRAMS = 0.5, 4
_PRETRAIN_TECHS = ("10x 3' v3", "10x 3' v2", "10x 5' v1", "10x 3' v3", "10x 3' v2", "10x 5' v1")
_INTEGRATION_TECHS = ("10x 3' v3", "Drop-seq", "10x 3' v2", "Seq-Well", "10x 5' v1", "10x 5' v2")

# Defaults per kind. Every key is a valid option of generate(); unknown options are errors.
_COMMON_DEFAULTS: dict[str, Any] = {
    "n_types": 16,  # world: cell types
    "n_programs": 20,  # world: latent dimension (gene programs)
    # median UMIs per cell at capture efficiency 1; None = 3000 up to 2000 genes, growing as
    # sqrt(n_genes / 2000) beyond (a larger gene space is a larger share of the transcriptome)
    "lib_median": None,
    "lib_sd": 0.45,  # sd of log library size
    "batch_strength": 1.0,  # multiplies study + technology gene effects and capture spread
    "composition_shift": 0.3,  # sd of log per-study cell-type abundance multipliers
    "donor_concentration": 150.0,  # Dirichlet concentration of donor compositions (higher = closer)
    "n_studies": 1,
    "studies": None,  # explicit study names (default from kind)
    "technologies": None,  # one per study (default from kind)
    "donors_per_study": 12,
    "informative_fraction": INFORMATIVE_FRACTION,  # world: share of genes with program loadings (1 = every gene)
    "subtype_programs": SUBTYPE_PROGRAMS,  # world: programs a subtype's offset lives in (0 = all programs)
    "dropout": 1.0,  # scales the technology's dropout midpoint (0 = no dropout)
    "saturation": 1.0,  # scales 1 / capacity of the technology's saturation (0 = linear capture)
}
_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": {"n_studies": 4, "donors_per_study": 8},
    "in_distribution": {"n_studies": 4, "donors_per_study": 4},
    "out_of_distribution": {"novel_fraction": 0.1, "n_novel_types": 2, "shift_strength": 1.0},
    "integration": {"n_studies": 4, "donors_per_study": 4, "batch_strength": 2.5, "composition_shift": 0.8},
    "spatial": {"panel_fraction": 0.1, "n_layers": 5, "donors_per_study": 10},
    "timecourse": {"n_timepoints": 6, "n_fates": 3, "fate_probs": [0.5, 0.3, 0.2], "donors_per_study": 10},
    "perturbation": {"n_perturbations": 4, "donors_per_study": 10},
}


# --------------------------------------------------------------------------------------------
# seeding


def _key(k) -> int:
    if isinstance(k, (bool, np.bool_)):
        return int(k)
    if isinstance(k, (int, np.integer)):
        if k < 0:
            raise ValueError(f"seeds must be non-negative integers, got {k}")
        return int(k)
    return zlib.crc32(str(k).encode())


def _rng(*keys) -> np.random.Generator:
    """An independent stream for a tuple of keys (ints or strings, stable across runs)."""
    return np.random.default_rng(np.random.SeedSequence([_key(k) for k in keys]))


# --------------------------------------------------------------------------------------------
# the world


def _type_catalog(n_types: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    rank = 0
    while len(out) < n_types:
        added = False
        for lineage, subs in _CATALOG:
            if len(out) == n_types:
                break
            if rank < len(subs):
                out.append((lineage, subs[rank]))
                added = True
            elif rank >= max(len(s) for _, s in _CATALOG):
                out.append((lineage, f"subtype {rank + 1}"))
                added = True
        rank += 1
        if not added and rank > 1000:  # pragma: no cover - defensive
            break
    return out


def _pseudo_symbols(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("ABCDEFGHIKLMNPRSTVWXYZ"))
    out: list[str] = []
    seen: set[str] = set()
    lengths = rng.integers(2, 5, size=n)
    nums = rng.integers(1, 30, size=n)
    has_num = rng.random(n) < 0.7
    for i in range(n):
        stem = "".join(rng.choice(letters, size=int(lengths[i])))
        sym = f"{stem}{nums[i]}" if has_num[i] else stem
        while sym in seen:  # keep symbols unique (real ones are, mostly)
            sym = f"{sym}L"
        seen.add(sym)
        out.append(sym)
    return out


class World:
    """The shared biology of every synthetic data set: deterministic from ``seed``.

    Attributes: ``gene_ids`` (ENSEMBL-like, unique), ``gene_symbols``, ``cell_types``
    ("lineage/subtype"), ``lineages`` (per type), ``type_frequencies`` (base abundances, some ~1 %),
    ``centroids`` (n_types, n_programs), ``spread`` (n_types,) within-type sd per latent dim,
    ``programs`` (n_programs, n_genes) log-fold loadings, ``base`` (n_genes,) baseline logits,
    ``theta`` (n_genes,) NB inverse dispersion.
    """

    def __init__(self, n_genes: int = 2000, n_types: int = 16, seed: int = 0, *, n_programs: int = 20,
                 informative_fraction: float = INFORMATIVE_FRACTION, subtype_programs: int = SUBTYPE_PROGRAMS):
        if n_genes < 10:
            raise ValueError(f"n_genes must be >= 10, got {n_genes}")
        if n_types < 2:
            raise ValueError(f"n_types must be >= 2, got {n_types}")
        if n_programs < 2:
            raise ValueError(f"n_programs must be >= 2, got {n_programs}")
        if not 0 < informative_fraction <= 1:
            raise ValueError(f"informative_fraction must be in (0, 1], got {informative_fraction}")
        if not 0 <= subtype_programs <= n_programs:
            raise ValueError(f"subtype_programs must be in [0, n_programs], got {subtype_programs}")
        self.n_genes, self.n_types, self.seed, self.n_programs = (
            int(n_genes),
            int(n_types),
            int(seed),
            int(n_programs),
        )
        self.informative_fraction, self.subtype_programs = float(informative_fraction), int(subtype_programs)
        G, T, K = self.n_genes, self.n_types, self.n_programs

        # genes: ids sorted like ENSEMBL's, symbols from a different namespace
        rng = _rng(seed, "genes", G)
        numbers = 10_000 + np.cumsum(rng.integers(1, 60, size=G))
        self.gene_ids: list[str] = [f"ENSG9{n:010d}" for n in numbers]
        self.gene_symbols: list[str] = _pseudo_symbols(rng, G)
        # baseline expression: log-normal across genes (a few very high, most low)
        self.base = rng.normal(0.0, 1.6, size=G).astype(np.float32)
        # NB inverse dispersion: median ~4, lower for lowly expressed genes
        log_theta = np.log(4.0) + 0.25 * (self.base / 1.6) + rng.normal(0.0, 0.5, size=G)
        self.theta = np.clip(np.exp(log_theta), 0.3, 100.0).astype(np.float32)
        self.gc = rng.normal(0.0, 1.0, size=G).astype(np.float32)  # drives technology bias

        # programs: sparse heavy-tailed loadings (marker-like) + a weak dense background
        rng = _rng(seed, "programs", G, K)
        f = self.informative_fraction
        support = rng.random((K, G)) < min(1.0, 0.05 / f)  # as many markers per program whatever f is
        W = np.where(support, rng.laplace(0.0, 0.7, size=(K, G)), rng.normal(0.0, 0.05, size=(K, G)))
        n_inf = max(1, round(f * G))
        self.informative = np.zeros(G, bool)
        self.informative[_rng(seed, "informative", G, n_inf).choice(G, size=n_inf, replace=False)] = True
        W[:, ~self.informative] = 0.0  # uninformative genes: no program moves them
        self.programs = W.astype(np.float32)
        cyc = rng.random(G) < 0.03
        self.cycle_program = np.where(cyc, rng.normal(1.2, 0.3, size=G), 0.0).astype(np.float32)
        # sex-linked genes (donor effect): one female-specific, three male-specific
        sex_genes = rng.choice(G, size=4, replace=False)
        self.sex_genes = (int(sex_genes[0]), [int(g) for g in sex_genes[1:]])

        # cell types: hierarchy lineage -> subtype
        rng = _rng(seed, "types", T, K)
        cat = _type_catalog(T)
        self.cell_types: list[str] = [f"{lin}/{sub}" for lin, sub in cat]
        self.lineages: list[str] = [lin for lin, _ in cat]
        self.lineage_names: list[str] = list(dict.fromkeys(self.lineages))
        self.type_lineage = np.array([self.lineage_names.index(lin) for lin in self.lineages])
        self.lineage_centroids = rng.normal(0.0, 1.0, size=(len(self.lineage_names), K))
        self.centroids = (
            self.lineage_centroids[self.type_lineage] + self._subtype_offsets(rng, T)
        ).astype(np.float32)
        self.spread = rng.uniform(0.2, 0.32, size=T).astype(np.float32)
        self.size_factor = np.exp(rng.normal(0.0, 0.25, size=T)).astype(np.float32)
        prolif = rng.beta(1.0, 15.0, size=T)
        prolif[np.array(self.lineages) == "Progenitor"] = 0.5
        self.proliferation = prolif
        # imbalanced abundances; a few non-first subtypes are rare (1.2-1.8 %: enough for >= 20 query cells)
        freq = np.exp(rng.normal(0.0, 0.7, size=T))
        first_of_lineage = np.zeros(T, bool)
        first_of_lineage[[self.lineages.index(lin) for lin in self.lineage_names]] = True
        candidates = np.flatnonzero(~first_of_lineage)
        n_rare = min(len(candidates), max(1, round(3 * T / 16)))
        self.rare_types = (
            sorted(rng.choice(candidates, size=n_rare, replace=False).tolist()) if n_rare else []
        )
        rare_p = np.linspace(0.012, 0.018, max(1, len(self.rare_types)))[: len(self.rare_types)]
        common = np.setdiff1d(np.arange(T), self.rare_types)
        freq = freq / freq[common].sum() * (1.0 - rare_p.sum())
        freq[self.rare_types] = rare_p
        self.type_frequencies = freq / freq.sum()

    def _subtype_offsets(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, K) offsets of subtypes from their lineage.

        ``subtype_programs`` = 0: N(0, 0.45) in every program (version 1). Otherwise the offset lives
        in that many programs per subtype, each moved by ±(0.35 + |N(0, 0.25)|) and zero elsewhere:
        siblings differ by small programs, yet every subtype is distinct in its true state (at least
        ~1.1 within-type sd along each of its programs)."""
        K = self.n_programs
        if not 0 < self.subtype_programs < K:
            return rng.normal(0.0, 0.45, size=(n, K))
        off = np.zeros((n, K))
        for i in range(n):
            dims = rng.choice(K, size=self.subtype_programs, replace=False)
            sign = np.where(rng.random(dims.size) < 0.5, -1.0, 1.0)
            off[i, dims] = sign * (0.35 + np.abs(rng.normal(0.0, 0.25, size=dims.size)))
        return off

    def technology_nonlinearity(self, technology: str) -> tuple[np.ndarray, float]:
        """A technology's per-gene saturation capacity (n_genes,; UMIs, log-normal around its median)
        and its dropout midpoint (expected UMIs)."""
        cap, mid = TECH_NONLINEARITY[technology]
        rng = _rng(self.seed, "saturation", technology, self.n_genes)
        return (cap * np.exp(rng.normal(0.0, 0.5, size=self.n_genes))).astype(np.float32), float(mid)

    def stress_response(self, study: str, n_lineages: int) -> tuple[np.ndarray, np.ndarray]:
        """A study's dissociation/stress genes (log-folds, n_genes,; 0 off them) and each lineage's
        response strength (n_lineages,; 0-2): a batch x cell-type interaction."""
        rng = _rng(self.seed, "stress", study, self.n_genes, n_lineages)
        genes = rng.random(self.n_genes) < 0.02
        lfc = np.where(genes, rng.normal(1.0, 0.4, size=self.n_genes), 0.0)
        return lfc.astype(np.float32), rng.uniform(0.0, 2.0, size=n_lineages).astype(np.float32)

    # ---- lookups --------------------------------------------------------------------------

    def type_index(self, name: str) -> int:
        return self.cell_types.index(name)

    def types_of(self, lineage: str) -> list[int]:
        return [i for i, lin in enumerate(self.lineages) if lin == lineage]

    def technology_effect(self, technology: str) -> np.ndarray:
        """Gene-specific log-fold bias of a technology (n_genes,), systematic in ``gc`` + noise."""
        rng = _rng(self.seed, "technology", technology, self.n_genes)
        coef = rng.normal(0.0, 0.3)
        return (coef * self.gc + rng.normal(0.0, 0.2, size=self.n_genes)).astype(np.float32)

    def study_effect(self, study: str) -> tuple[np.ndarray, float, float]:
        """A study's gene log-folds (n_genes,), capture jitter (log) and ambient fraction."""
        rng = _rng(self.seed, "study", study, self.n_genes)
        lfc = rng.normal(0.0, 0.15, size=self.n_genes)
        strong = rng.random(self.n_genes) < 0.03  # dissociation/stress genes and the like
        lfc[strong] += rng.normal(0.0, 0.8, size=int(strong.sum()))
        capture = float(np.clip(rng.normal(0.0, 0.25), -0.4, 0.4))
        return lfc.astype(np.float32), capture, float(rng.uniform(0.01, 0.05))

    def study_composition(self, study: str, sd: float) -> np.ndarray:
        """Per-type abundance multipliers of a study (tissue/sampling differences)."""
        rng = _rng(self.seed, "composition", study, self.n_types)
        return np.exp(rng.normal(0.0, sd, size=self.n_types))

    def novel_types(self, n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Subtypes only the out-of-distribution study has: names, centroids, lineage index."""
        rng = _rng(self.seed, "novel", self.n_types, self.n_programs)
        names, cents, lins = [], [], []
        for lineage, sub in _NOVEL_CATALOG[:n]:
            li = self.lineage_names.index(lineage) if lineage in self.lineage_names else 0
            names.append(f"{self.lineage_names[li]}/{sub}")
            cents.append(self.lineage_centroids[li] + self._subtype_offsets(rng, 1)[0])
            lins.append(li)
        return (
            names,
            np.asarray(cents, np.float32).reshape(len(names), self.n_programs),
            np.asarray(lins, int),
        )

    def spatial_panel(self, fraction: float) -> np.ndarray:
        """Sorted gene indices of an imaging panel: half program markers, half other expressed genes."""
        n = max(2, min(self.n_genes, round(fraction * self.n_genes)))
        rng = _rng(self.seed, "panel", self.n_genes, n)
        marker_score = np.abs(self.programs).max(axis=0)
        order = np.argsort(-marker_score, kind="stable")
        markers = order[: n // 2]
        rest = np.setdiff1d(np.flatnonzero(self.base > np.quantile(self.base, 0.3)), markers)
        if rest.size < n - markers.size:
            rest = np.setdiff1d(np.arange(self.n_genes), markers)
        others = rng.choice(rest, size=n - markers.size, replace=False)
        return np.sort(np.concatenate([markers, others]))


@functools.lru_cache(maxsize=8)
def _world(n_genes: int, n_types: int, seed: int, n_programs: int, informative_fraction: float,
           subtype_programs: int) -> World:
    return World(n_genes, n_types, seed, n_programs=n_programs, informative_fraction=informative_fraction,
                 subtype_programs=subtype_programs)


# --------------------------------------------------------------------------------------------
# the plan of one data set: everything that does not depend on n_cells


@dataclass
class _Plan:
    kind: str
    seed: int
    world_seed: int
    n_genes: int
    options: dict
    world: World
    type_names: list[str]
    type_lineage: list[str]
    centroids: np.ndarray  # (n_types_all, K)
    spread: np.ndarray
    size_factor: np.ndarray
    proliferation: np.ndarray
    programs: np.ndarray  # (K, G), possibly shifted (OOD)
    studies: list[str]
    technologies: list[str]
    batches: list[str]
    donors: list[str]
    donor_study: np.ndarray
    donor_weight: np.ndarray
    donor_comp: np.ndarray  # (n_donors, n_types_all)
    donor_shift: np.ndarray  # (n_donors, K)
    donor_offset: np.ndarray  # (n_donors, G) donor + batch log-folds
    capture: np.ndarray  # (n_studies,)
    ambient: np.ndarray  # (n_studies,)
    ambient_profile: np.ndarray  # (n_studies, G)
    capacity: np.ndarray  # (n_studies, G) saturation capacity (UMIs; inf = linear)
    dropout_mid: np.ndarray  # (n_studies,) dropout midpoint (expected UMIs; 0 = no dropout)
    stress: np.ndarray  # (n_studies, G) stress-gene log-folds
    stress_strength: np.ndarray  # (n_studies, n_types_all) per-type response to the study's stress
    genes: np.ndarray | None = None  # subset of gene indices (spatial panel)
    latent_shift: np.ndarray | None = None  # added to every cell's true state (OOD)
    extra: dict = field(default_factory=dict)
    uns: dict = field(default_factory=dict)


def _resolve_options(kind: str, options: dict) -> dict:
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; expected one of {', '.join(KINDS)}")
    opts = dict(options)
    nested = opts.pop("options", None)  # the workflow config passes extras as one mapping
    if nested:
        if not isinstance(nested, dict):
            raise TypeError(f"options must be a mapping, got {type(nested).__name__}")
        opts.update(nested)
    allowed = {**_COMMON_DEFAULTS, **_KIND_DEFAULTS[kind]}
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(unknown)} for synthetic kind {kind!r}; valid: {', '.join(sorted(allowed))}"
        )
    return {**allowed, **{k: v for k, v in opts.items() if v is not None}}


def _study_setup(kind: str, opts: dict) -> tuple[list[str], list[str]]:
    prefix = {
        "pretrain": "study",
        "in_distribution": "study",
        "out_of_distribution": "ood",
        "integration": "integ",
        "spatial": "spatial",
        "timecourse": "timecourse",
        "perturbation": "perturb",
    }[kind]
    studies = opts["studies"]
    if studies is None:
        studies = [f"{prefix}{i + 1}" for i in range(int(opts["n_studies"]))]
    studies = [str(s) for s in studies]
    techs = opts["technologies"]
    if techs is None:
        pool = {
            "pretrain": _PRETRAIN_TECHS,
            "in_distribution": _PRETRAIN_TECHS,
            "integration": _INTEGRATION_TECHS,
            "out_of_distribution": ("10x 5' v2",),
            "spatial": ("MERFISH",),
        }.get(kind, ("10x 3' v3",))
        techs = [pool[i % len(pool)] for i in range(len(studies))]
    techs = [str(t) for t in techs]
    if len(techs) != len(studies):
        raise ValueError(f"technologies ({len(techs)}) must match studies ({len(studies)})")
    for t in techs:
        if t not in TECHNOLOGIES:
            raise ValueError(f"unknown technology {t!r}; expected one of {', '.join(TECHNOLOGIES)}")
    if not studies:
        raise ValueError("a synthetic data set needs at least one study")
    return studies, techs


def _plan(kind: str, *, n_genes: int, seed: int, world_seed: int, options: dict) -> _Plan:
    opts = _resolve_options(kind, options)
    if opts.get("lib_median") is None:
        opts["lib_median"] = 3000.0 * math.sqrt(max(1.0, n_genes / 2000))
    world = _world(int(n_genes), int(opts["n_types"]), int(world_seed), int(opts["n_programs"]),
                   float(opts["informative_fraction"]), int(opts["subtype_programs"]))
    G, K = world.n_genes, world.n_programs
    studies, techs = _study_setup(kind, opts)
    opts["studies"], opts["technologies"] = studies, techs  # resolved, for uns["synthetic"]
    strength = float(opts["batch_strength"])
    tag = f"{_KIND_TAG[kind]}{seed}"

    type_names = list(world.cell_types)
    type_lineage = list(world.lineages)
    centroids = world.centroids.copy()
    spread, size_factor, prolif = world.spread.copy(), world.size_factor.copy(), world.proliferation.copy()
    base_freq = world.type_frequencies.copy()
    programs = world.programs
    extra: dict = {}
    uns: dict = {}
    latent_shift = None

    if kind == "out_of_distribution":
        n_novel = int(opts["n_novel_types"])
        if n_novel > len(_NOVEL_CATALOG):
            raise ValueError(f"n_novel_types must be <= {len(_NOVEL_CATALOG)}")
        names, cents, lins = world.novel_types(n_novel)
        type_names += names
        type_lineage += [world.lineage_names[li] for li in lins]
        centroids = np.vstack([centroids, cents])
        rngn = _rng(world_seed, "novel-params", n_novel)
        spread = np.concatenate([spread, rngn.uniform(0.2, 0.32, n_novel).astype(np.float32)])
        size_factor = np.concatenate([size_factor, np.exp(rngn.normal(0, 0.25, n_novel)).astype(np.float32)])
        prolif = np.concatenate([prolif, rngn.beta(1.0, 15.0, n_novel)])
        nf = float(opts["novel_fraction"])
        base_freq = np.concatenate([base_freq * (1 - nf), np.full(n_novel, nf / max(n_novel, 1))])
        # shifted programs: part of three programs' marker genes are re-wired, plus a global
        # state shift (disease/tissue), both scaled by shift_strength
        s = float(opts["shift_strength"])
        rngs = _rng(world_seed, "ood-shift", G, K)
        programs = programs.copy()
        for k in rngs.choice(K, size=min(3, K), replace=False):
            sup = np.flatnonzero(np.abs(programs[k]) > 0.2)
            moved = rngs.choice(sup, size=int(round(0.3 * len(sup))), replace=False) if sup.size else sup
            targets = rngs.choice(G, size=moved.size, replace=False)
            vals = programs[k, moved].copy()
            programs[k, moved] *= 1 - s
            programs[k, targets] += s * vals
        latent_shift = (s * rngs.normal(0.0, 0.25, size=K)).astype(np.float32)
        uns["novel_types"] = names
    elif kind == "perturbation":
        immune = [
            i for i, lin in enumerate(type_lineage) if lin in ("T cell", "B cell", "NK cell", "Myeloid")
        ]
        if len(immune) >= 2:
            mask = np.zeros(len(type_names), bool)
            mask[immune] = True
            base_freq = np.where(mask, base_freq, 0.0)

    T_all = len(type_names)
    # donors: each study has donors_per_study donors with their own composition and effects
    n_dps = int(opts["donors_per_study"])
    if n_dps < 1:
        raise ValueError("donors_per_study must be >= 1")
    rngd = _rng(world_seed, "donors", kind, seed, G)
    donors, donor_study, donor_comp, donor_weight = [], [], [], []
    comp_sd = float(opts["composition_shift"])
    conc = float(opts["donor_concentration"])
    for si, study in enumerate(studies):
        mult = world.study_composition(study, comp_sd)
        if mult.size < T_all:
            mult = np.concatenate([mult, np.ones(T_all - mult.size)])
        p = base_freq * mult
        p = p / p.sum()
        for j in range(n_dps):
            donors.append(f"{study}_{tag}_donor{j:02d}")
            donor_study.append(si)
            alpha = np.maximum(conc * p, 1e-3)
            c = rngd.dirichlet(alpha)
            c[p == 0] = 0.0
            donor_comp.append(c / c.sum())
        donor_weight.extend(rngd.uniform(0.6, 1.4, size=n_dps))
    n_d = len(donors)
    donor_study = np.asarray(donor_study)
    donor_weight = np.asarray(donor_weight) / np.sum(donor_weight)
    donor_comp = np.asarray(donor_comp)
    donor_shift = rngd.normal(0.0, 0.12, size=(n_d, K)).astype(np.float32)
    donor_lfc = rngd.normal(0.0, 0.08, size=(n_d, G)).astype(np.float32)
    female = rngd.random(n_d) < 0.5
    fg, mgs = world.sex_genes
    donor_lfc[:, fg] += np.where(female, 5.0, -3.0)
    for g in mgs:
        donor_lfc[:, g] += np.where(female, -3.0, 4.0)

    # batch effects: study + technology gene log-folds, capture efficiency, ambient RNA
    batch_lfc = np.empty((len(studies), G), np.float32)
    capture = np.empty(len(studies))
    ambient = np.empty(len(studies))
    for si, (study, tech) in enumerate(zip(studies, techs)):
        lfc, cap_jitter, amb = world.study_effect(study)
        batch_lfc[si] = strength * (lfc + world.technology_effect(tech))
        capture[si] = TECHNOLOGIES[tech][1] * math.exp(strength * cap_jitter)
        ambient[si] = min(0.3, strength * amb)
    donor_offset = donor_lfc + batch_lfc[donor_study]
    # nonlinear technology effects: saturation, dropout, a stress response that depends on the lineage
    sat, drop = float(opts["saturation"]), float(opts["dropout"])
    if sat < 0 or drop < 0:
        raise ValueError("saturation and dropout must be >= 0")
    lin_index = np.array([world.lineage_names.index(lin) if lin in world.lineage_names else 0
                          for lin in type_lineage])
    capacity = np.full((len(studies), G), np.inf, np.float32)
    dropout_mid = np.zeros(len(studies))
    stress = np.zeros((len(studies), G), np.float32)
    stress_strength = np.zeros((len(studies), len(type_names)), np.float32)
    for si, (study, tech) in enumerate(zip(studies, techs)):
        cap, mid = world.technology_nonlinearity(tech)
        if sat > 0:
            capacity[si] = cap / sat
        dropout_mid[si] = drop * mid
        lfc_s, per_lineage = world.stress_response(study, len(world.lineage_names))
        stress[si] = strength * lfc_s
        stress_strength[si] = per_lineage[lin_index]
    # ambient RNA: the study's average profile
    amb_logits = world.base[None, :] + batch_lfc
    amb_logits -= amb_logits.max(axis=1, keepdims=True)
    ambient_profile = np.exp(amb_logits)
    ambient_profile /= ambient_profile.sum(axis=1, keepdims=True)

    plan = _Plan(
        kind=kind,
        seed=int(seed),
        world_seed=int(world_seed),
        n_genes=G,
        options=opts,
        world=world,
        type_names=type_names,
        type_lineage=type_lineage,
        centroids=centroids.astype(np.float32),
        spread=spread,
        size_factor=size_factor,
        proliferation=prolif,
        programs=programs,
        studies=studies,
        technologies=techs,
        batches=[f"{s}_{TECHNOLOGIES[t][0]}" for s, t in zip(studies, techs)],
        donors=donors,
        donor_study=donor_study,
        donor_weight=donor_weight,
        donor_comp=donor_comp,
        donor_shift=donor_shift,
        donor_offset=donor_offset.astype(np.float32),
        capture=capture,
        ambient=ambient,
        ambient_profile=ambient_profile.astype(np.float32),
        capacity=capacity,
        dropout_mid=dropout_mid,
        stress=stress,
        stress_strength=stress_strength,
        latent_shift=latent_shift,
        extra=extra,
        uns=uns,
    )
    if kind == "timecourse":
        _plan_timecourse(plan, opts)
    elif kind == "spatial":
        _plan_spatial(plan, opts)
    elif kind == "perturbation":
        _plan_perturbation(plan, opts)
    return plan


def _pick_types(world: World, preferred: list[str], n: int, exclude: set[int]) -> list[int]:
    out = [
        world.type_index(p) for p in preferred if p in world.cell_types and world.type_index(p) not in exclude
    ]
    used_lineages = {world.lineages[i] for i in out} | {world.lineages[i] for i in exclude}
    for i, lin in enumerate(world.lineages):  # fallback: first type of other lineages, then anything
        if len(out) >= n:
            break
        if i not in out and i not in exclude and lin not in used_lineages:
            out.append(i)
            used_lineages.add(lin)
    for i in range(world.n_types):
        if len(out) >= n:
            break
        if i not in out and i not in exclude:
            out.append(i)
    return out[:n]


def _plan_timecourse(plan: _Plan, opts: dict) -> None:
    world = plan.world
    n_t = int(opts["n_timepoints"])
    n_f = int(opts["n_fates"])
    if n_t < 2 or n_f < 1:
        raise ValueError("timecourse needs n_timepoints >= 2 and n_fates >= 1")
    root = _pick_types(world, ["Progenitor/HSC"], 1, set())[0]
    fates = _pick_types(
        world,
        ["Myeloid/classical monocyte", "Progenitor/erythroid progenitor", "B cell/naive", "NK cell/CD56 dim"],
        n_f,
        {root},
    )
    probs = np.asarray(list(opts["fate_probs"])[: len(fates)], float)
    if probs.size < len(fates):
        probs = np.concatenate([probs, np.full(len(fates) - probs.size, probs.mean() if probs.size else 1.0)])
    probs = probs / probs.sum()
    rng = _rng(plan.world_seed, "timecourse", world.n_programs, root, *fates)
    c_root = world.centroids[root]
    c_fates = world.centroids[fates]
    branch = 0.5 * (c_root + c_fates.mean(axis=0)) + rng.normal(0.0, 0.3, size=world.n_programs)
    plan.extra.update(
        root=root,
        fates=np.asarray(fates),
        fate_probs=probs,
        times=np.arange(n_t, dtype=float),
        branch=branch.astype(np.float32),
    )
    plan.uns["timecourse_truth"] = {
        "root": world.cell_types[root],
        "fates": [world.cell_types[f] for f in fates],
        "fate_probabilities": [float(p) for p in probs],
        "times": [float(t) for t in range(n_t)],
        "commitment_progress": 0.35,
    }


# spatial tissue: layers from the surface down; weights over full type names or lineages
_LAYER_SPECS = (
    {"Epithelial/luminal": 0.75, "Epithelial/secretory": 0.1, "Epithelial/basal": 0.1, "T cell": 0.05},
    {"Epithelial/basal": 0.75, "Epithelial/luminal": 0.1, "T cell": 0.1, "Myeloid": 0.05},
    {"Stromal/fibroblast": 0.6, "Stromal/endothelial": 0.2, "Stromal/pericyte": 0.05, "Myeloid": 0.15},
    {"T cell": 0.55, "B cell": 0.2, "Myeloid": 0.12, "NK cell": 0.08, "Stromal/fibroblast": 0.05},
    {"Stromal/endothelial": 0.5, "Stromal/fibroblast": 0.35, "Stromal/pericyte": 0.1, "Myeloid": 0.05},
)


def _plan_spatial(plan: _Plan, opts: dict) -> None:
    world = plan.world
    n_layers = int(opts["n_layers"])
    if n_layers < 2:
        raise ValueError("spatial needs n_layers >= 2")
    T = len(plan.type_names)
    comp = np.zeros((n_layers, T))
    for li in range(n_layers):
        spec = _LAYER_SPECS[li % len(_LAYER_SPECS)]
        for key, w in spec.items():
            match = [
                i
                for i, (n, lin) in enumerate(zip(plan.type_names, plan.type_lineage))
                if n == key or lin == key
            ]
            for i in match:
                comp[li, i] += w / len(match)
        if comp[li].sum() == 0:  # worlds without these lineages: a round-robin share of types
            comp[li, li % T :: n_layers] = 1.0
        comp[li] += 0.002  # a few stray cells of every type
        comp[li] /= comp[li].sum()
    rng = _rng(plan.world_seed, "spatial", n_layers)
    if n_layers == 5:
        bounds = np.array([0.15, 0.3, 0.55, 0.8])  # thin epithelium over stroma and infiltrate
    else:
        bounds = np.sort(
            np.linspace(0, 1, n_layers + 1)[1:-1] + rng.uniform(-0.25, 0.25, n_layers - 1) / n_layers
        )
    plan.genes = world.spatial_panel(float(opts["panel_fraction"]))
    plan.extra.update(
        layer_comp=comp,
        bounds=bounds,
        width=1000.0,
        depth=500.0,
        phase=_rng(plan.world_seed, "sections", plan.seed).uniform(0, 2 * np.pi, size=len(plan.donors)),
    )
    plan.uns["spatial_truth"] = {
        "layers": [f"L{i + 1}" for i in range(n_layers)],
        "layer_boundaries_depth_fraction": [float(b) for b in bounds],
        "dominant_type_per_layer": [plan.type_names[int(np.argmax(c))] for c in comp],
        "panel_size": int(plan.genes.size),
    }


def _plan_perturbation(plan: _Plan, opts: dict) -> None:
    world = plan.world
    n_p = int(opts["n_perturbations"])
    if n_p < 1:
        raise ValueError("perturbation needs n_perturbations >= 1")
    G, K, T = world.n_genes, world.n_programs, len(plan.type_names)
    rng = _rng(plan.world_seed, "perturbations", G, K, T, n_p)
    lin_names = world.lineage_names
    levels = np.array([0.0, 0.3, 1.0, 1.6])
    names = [f"pert_{chr(ord('A') + i)}" if i < 26 else f"pert_{i}" for i in range(n_p)]
    shift = np.zeros((n_p, K), np.float32)
    direct = np.zeros((n_p, G), np.float32)
    resp = np.zeros((T, n_p), np.float32)
    knock = np.zeros((n_p, G), np.float32)
    truth = {}
    expressed = np.flatnonzero(world.base > np.quantile(world.base, 0.75))
    present = np.flatnonzero(plan.donor_comp.sum(axis=0) > 0)
    lin_of = np.array([lin_names.index(lin) for lin in plan.type_lineage])
    present_lineages = np.unique(lin_of[present])
    for p in range(n_p):
        ks = rng.choice(K, size=min(3, K), replace=False)
        shift[p, ks] = rng.normal(0.0, 0.5, size=ks.size) + np.sign(rng.normal(size=ks.size)) * 0.3
        genes = rng.choice(G, size=min(25, G), replace=False)
        direct[p, genes] = rng.normal(0.0, 1.5, size=genes.size)
        target = int(rng.choice(expressed))
        knock[p, target] = -2.5  # CRISPRi knock-down of the target, in every cell type
        # cell-type-dependent response: per lineage a level (one lineage does not respond,
        # one responds strongly), per type a jitter
        # one response level per lineage present (every level used once before any repeats, so
        # one lineage does not respond and one responds strongly), jittered per type
        lv = np.zeros(len(lin_names))
        lv[present_lineages] = rng.permutation(np.resize(levels, len(present_lineages)))
        resp[:, p] = lv[lin_of] * np.exp(rng.normal(0.0, 0.25, size=T))
        eff = shift[p] @ plan.programs + direct[p]
        order = np.argsort(-np.abs(eff), kind="stable")
        affected = [int(g) for g in order[:100] if abs(eff[g]) > 0.5]
        truth[names[p]] = {
            "target_gene": world.gene_ids[target],
            "affected_genes": [world.gene_ids[g] for g in affected] or [world.gene_ids[target]],
            "affected_lfc_at_response_1": [float(eff[g]) for g in affected] or [0.0],
            # parallel lists, not a mapping: type names contain "/", which HDF5 reads as a path
            "cell_types": [plan.type_names[i] for i in present],
            "response": [float(resp[i, p]) for i in present],
            "latent_shift": [float(v) for v in shift[p]],
        }
    plan.extra.update(conditions=["control"] + names, shift=shift, direct=direct, resp=resp, knock=knock)
    plan.uns["perturbation_truth"] = truth


# --------------------------------------------------------------------------------------------
# counts


def _categorical(rng: np.random.Generator, p: np.ndarray, size: int) -> np.ndarray:
    cdf = np.cumsum(p)
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), len(p) - 1)


def _categorical_rows(rng: np.random.Generator, P: np.ndarray, rows: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(P, axis=1)[rows]
    u = rng.random(rows.size)[:, None] * cdf[:, -1:]
    return np.minimum((u >= cdf).sum(axis=1), P.shape[1] - 1)


_HIGH_MEAN = 2.0


def sample_nb(rng: np.random.Generator, mu: np.ndarray, theta: np.ndarray) -> sp.csr_matrix:
    """Negative-binomial draws by inverse CDF, returned sparse.

    ``mu`` (cells, genes) means, ``theta`` (genes,) inverse dispersions (variance mu + mu^2/theta).
    One uniform ``v`` per entry (float32, 2^-24 resolution, centred in its bin) against the
    survival function: X > 0 iff v < P(X > 0) = 1 - (theta/(theta+mu))^theta, and P(X > 0) <= mu,
    so entries with v >= mu are zero after one comparison and the exact test runs on the few
    others. Non-zero entries with a small mean continue down the survival function by the NB
    recurrence; those with a larger mean are drawn gamma-Poisson conditioned on X > 0.
    Returns CSR float32.
    """
    B, G = mu.shape
    mu = np.ascontiguousarray(mu, dtype=np.float32)
    theta = np.asarray(theta, dtype=np.float32)
    v = rng.random(mu.shape, dtype=np.float32)
    v += np.float32(2.0**-25)  # (0, 1): no exact zero, which would mean an infinite tail
    cand = np.flatnonzero(v < mu)
    m = mu.reshape(-1)[cand].astype(np.float64)
    th = theta[cand % G].astype(np.float64)
    vv = v.reshape(-1)[cand].astype(np.float64)
    del v
    log_p0 = -th * np.log1p(m / th)
    keep = vv < -np.expm1(log_p0)
    nz, m, th, vv, log_p0 = cand[keep], m[keep], th[keep], vv[keep], log_p0[keep]
    val = np.empty(nz.size, np.float64)

    idx = np.flatnonzero(m > _HIGH_MEAN)
    while idx.size:  # acceptance = P(X > 0) > 0.45 for mean > 2, theta >= 0.3
        lam = rng.standard_gamma(th[idx]) * (m[idx] / th[idx])
        x = rng.poisson(lam)
        ok = x > 0
        val[idx[ok]] = x[ok]
        idx = idx[~ok]

    lo = np.flatnonzero(m <= _HIGH_MEAN)
    tl, vl = th[lo], vv[lo]
    q = m[lo] / (m[lo] + tl)
    pk = np.exp(log_p0[lo])  # P(X = 0)
    surv = 1.0 - pk  # P(X > k), k = 0
    act = np.arange(lo.size)
    k = 0
    while act.size and k < 100_000:
        k += 1
        pk *= (k - 1 + tl) / k * q
        surv -= pk
        done = vl >= surv  # X = k iff P(X > k) <= v < P(X > k - 1)
        val[lo[act[done]]] = k
        keep = ~done
        act, pk, surv, tl, q, vl = act[keep], pk[keep], surv[keep], tl[keep], q[keep], vl[keep]
    if act.size:  # pragma: no cover - float saturation, practically unreachable
        val[lo[act]] = k

    rows = nz // G
    indptr = np.zeros(B + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=B), out=indptr[1:])
    return sp.csr_matrix((val.astype(np.float32), (nz % G).astype(np.int32), indptr), shape=(B, G))


def _dropout(rng: np.random.Generator, X: sp.csr_matrix, mu: np.ndarray, midpoint: np.ndarray) -> None:
    """Technology dropout in place: each drawn count of cell i is lost with probability
    ``1 / (1 + exp(DROPOUT_SLOPE * (log mu - log midpoint_i)))``; a cell with midpoint 0 keeps all."""
    if not (midpoint > 0).any():  # dropout off (the block's last draw: skipping it changes nothing else)
        return
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    mid = midpoint[rows]
    on = mid > 0
    u = rng.random(X.nnz)
    m = mu[rows, X.indices].astype(np.float64)
    with np.errstate(divide="ignore"):
        z = DROPOUT_SLOPE * (np.log(m) - np.log(np.where(on, mid, 1.0)))
    p_drop = np.where(on, 1.0 / (1.0 + np.exp(np.clip(z, -50, 50))), 0.0)
    lost = u < p_drop
    if lost.any():
        X.data[lost] = 0
        X.eliminate_zeros()


# --------------------------------------------------------------------------------------------
# one block of cells


def _block(plan: _Plan, b: int) -> dict:
    """Cells b*BLOCK_SIZE ... (b+1)*BLOCK_SIZE - 1 of the data set: obs codes, X_true, counts."""
    rng = _rng(plan.world_seed, "cells", plan.kind, plan.seed, plan.n_genes, b)
    world = plan.world
    B, K = BLOCK_SIZE, world.n_programs
    obs: dict[str, np.ndarray] = {}
    donor = _categorical(rng, plan.donor_weight, B)
    noise = rng.standard_normal((B, K)).astype(np.float32)

    if plan.kind == "timecourse":
        ex = plan.extra
        t = rng.integers(0, len(ex["times"]), size=B)
        fate = _categorical(rng, ex["fate_probs"], B)
        mean = 0.04 + 0.92 * t / max(1, len(ex["times"]) - 1)
        conc = 25.0
        s = rng.beta(mean * conc, (1 - mean) * conc)
        c_root = world.centroids[ex["root"]]
        c_fate = world.centroids[ex["fates"][fate]]
        s_ = s[:, None].astype(np.float32)
        z = (1 - s_) ** 2 * c_root + 2 * s_ * (1 - s_) * ex["branch"] + s_**2 * c_fate
        committed = s >= 0.35
        ctype = np.where(committed, ex["fates"][fate], ex["root"])
        spread = np.where(committed, plan.spread[ctype], plan.spread[ex["root"]])
        z = z + spread[:, None] * noise
        obs.update(time=ex["times"][t], fate=fate, lineage_progress=s)
    elif plan.kind == "spatial":
        ex = plan.extra
        x = rng.uniform(0.0, ex["width"], size=B)
        y = rng.uniform(0.0, ex["depth"], size=B)
        wave = 0.04 * np.sin(2 * np.pi * x / 400.0 + ex["phase"][donor])
        frac = y / ex["depth"] - wave
        layer = np.searchsorted(ex["bounds"], frac, side="right")
        ctype = _categorical_rows(rng, ex["layer_comp"], layer)
        z = plan.centroids[ctype] + plan.spread[ctype][:, None] * noise
        obs.update(x=x, y=y, layer=layer)
    else:
        ctype = _categorical_rows(rng, plan.donor_comp, donor)
        z = plan.centroids[ctype] + plan.spread[ctype][:, None] * noise
    if plan.latent_shift is not None:
        z = z + plan.latent_shift
    cond = None
    if plan.kind == "perturbation":
        ex = plan.extra
        cond = rng.integers(0, len(ex["conditions"]), size=B)
        pert = cond > 0
        r = np.zeros(B, np.float32)
        r[pert] = ex["resp"][ctype[pert], cond[pert] - 1]
        z = z + np.where(pert[:, None], r[:, None] * ex["shift"][np.maximum(cond - 1, 0)], 0.0)
        obs["condition"] = cond
    z = z.astype(np.float32)
    cycling = rng.random(B) < plan.proliferation[ctype]
    study = plan.donor_study[donor]
    lib = (
        plan.options["lib_median"]
        * plan.capture[study]
        * plan.size_factor[ctype]
        * np.exp(plan.options["lib_sd"] * rng.standard_normal(B))
    ).astype(np.float32)

    # relative expression: softmax of the logits, then ambient RNA
    logits = (z + plan.donor_shift[donor]) @ plan.programs
    logits += world.base
    logits += plan.donor_offset[donor]
    logits += plan.stress_strength[study, ctype][:, None] * plan.stress[study]
    if cycling.any():
        logits[cycling] += world.cycle_program
    if cond is not None:
        for p in range(1, len(plan.extra["conditions"])):
            rows = np.flatnonzero(cond == p)
            if rows.size:
                # downstream effects scale with the cell type's response; the knock-down does not
                logits[rows] += r[rows, None] * plan.extra["direct"][p - 1] + plan.extra["knock"][p - 1]
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    scale = lib * (1 - plan.ambient[study]) / logits.sum(axis=1)
    logits *= scale[:, None].astype(np.float32)
    mu = logits
    mu += (lib * plan.ambient[study]).astype(np.float32)[:, None] * plan.ambient_profile[study]
    mu /= 1.0 + mu / plan.capacity[study]  # saturation of highly expressed genes (inf: none)
    theta = world.theta
    if plan.genes is not None:
        mu, theta = mu[:, plan.genes], theta[plan.genes]
    X = sample_nb(rng, mu, theta)
    _dropout(rng, X, mu, plan.dropout_mid[study])

    obs.update(donor=donor, cell_type=ctype, cycling=cycling)
    return {"obs": obs, "X_true": z, "X": X}


# --------------------------------------------------------------------------------------------
# assembly


def _obs_frame(plan: _Plan, cols: dict, start: int) -> pd.DataFrame:
    n = len(cols["donor"])
    world = plan.world
    donor = cols["donor"]
    study = plan.donor_study[donor]
    cat = pd.Categorical.from_codes
    tech_names = list(dict.fromkeys(plan.technologies))
    tech_code = np.array([tech_names.index(t) for t in plan.technologies])[study]
    lineage_names = list(dict.fromkeys(plan.type_lineage))
    type_lin = np.array([lineage_names.index(lin) for lin in plan.type_lineage])
    data: dict[str, Any] = {
        "cell_type": cat(cols["cell_type"], categories=plan.type_names),
        "lineage": cat(type_lin[cols["cell_type"]], categories=lineage_names),
        "donor": cat(donor, categories=plan.donors),
        "batch": cat(study, categories=plan.batches),
        "study": cat(study, categories=plan.studies),
        "technology": cat(tech_code, categories=tech_names),
        "cycling": cols["cycling"].astype(bool),
    }
    if plan.kind == "out_of_distribution":
        data["is_novel_type"] = cols["cell_type"] >= world.n_types
    if plan.kind == "timecourse":
        fates = [world.cell_types[f] for f in plan.extra["fates"]]
        data["time"] = cols["time"].astype(np.float64)
        data["fate"] = cat(cols["fate"], categories=fates)
        data["lineage_progress"] = cols["lineage_progress"].astype(np.float64)
    if plan.kind == "spatial":
        data["x"] = cols["x"].astype(np.float64)
        data["y"] = cols["y"].astype(np.float64)
        data["layer"] = cat(cols["layer"], categories=plan.uns["spatial_truth"]["layers"])
    if plan.kind == "perturbation":
        data["condition"] = cat(cols["condition"], categories=plan.extra["conditions"])
    index = pd.Index([f"{plan.kind}_{plan.seed}_cell{i}" for i in range(start, start + n)], dtype=str)
    return pd.DataFrame(data, index=index)


def _var_frame(plan: _Plan) -> pd.DataFrame:
    genes = np.arange(plan.n_genes) if plan.genes is None else plan.genes
    ids = [plan.world.gene_ids[g] for g in genes]
    return pd.DataFrame(
        {"gene_symbol": pd.array([plan.world.gene_symbols[g] for g in genes], dtype=object)},
        index=pd.Index(ids, dtype=str),
    )


def _uns(plan: _Plan, n_cells: int) -> dict:
    opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in plan.options.items() if v is not None}
    uns = {
        "synthetic": {
            "kind": plan.kind,
            "seed": plan.seed,
            "world_seed": plan.world_seed,
            "n_cells": int(n_cells),
            "n_genes": plan.n_genes,
            "options": opts,
            "version": GENERATOR_VERSION,
            "latent_dim": plan.world.n_programs,
        }
    }
    for k, v in plan.uns.items():
        uns[k] = v
    return uns


def _single_threaded_blas():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _cells(plan: _Plan, start: int, stop: int, n_jobs: int = 1):
    """obs columns (codes), X_true and counts of cells [start, stop)."""
    b0, b1 = start // BLOCK_SIZE, (stop - 1) // BLOCK_SIZE
    blocks = range(b0, b1 + 1)
    # the only BLAS call is a thin (cells x programs) @ (programs x genes) product: threads do
    # not pay for it, and on a busy machine they cost several times the single-thread run
    with _single_threaded_blas():
        if n_jobs > 1 and len(blocks) > 1:
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:  # numpy releases the GIL
                outs = list(pool.map(lambda b: _block(plan, b), blocks))
        else:
            outs = [_block(plan, b) for b in blocks]
    lo = start - b0 * BLOCK_SIZE
    hi = stop - b0 * BLOCK_SIZE
    cols = {k: np.concatenate([o["obs"][k] for o in outs])[lo:hi] for k in outs[0]["obs"]}
    X_true = np.concatenate([o["X_true"] for o in outs])[lo:hi]
    X = sp.vstack([o["X"] for o in outs], format="csr")[lo:hi]
    return cols, X_true, X


def _adata(plan: _Plan, start: int, stop: int, n_cells: int, n_jobs: int):
    import anndata as ad

    cols, X_true, X = _cells(plan, start, stop, n_jobs)
    X.sort_indices()
    adata = ad.AnnData(
        X=X.astype(np.float32),
        obs=_obs_frame(plan, cols, start),
        var=_var_frame(plan),
        obsm={"X_true": np.ascontiguousarray(X_true, dtype=np.float32)},
        uns=_uns(plan, n_cells),
    )
    if plan.kind == "spatial":
        adata.obsm["spatial"] = adata.obs[["x", "y"]].to_numpy(np.float64)
    return adata


def _check_n(n_cells) -> int:
    n = int(n_cells)
    if n < 1:
        raise ValueError(f"n_cells must be positive, got {n_cells}")
    return n


def _drop_unused(adata) -> None:
    for col in adata.obs.columns:
        if isinstance(adata.obs[col].dtype, pd.CategoricalDtype):
            adata.obs[col] = adata.obs[col].cat.remove_unused_categories()


def generate(
    kind: str,
    n_cells: int,
    *,
    n_genes: int = 2000,
    seed: int = 0,
    world_seed: int = 0,
    n_jobs: int = 1,
    **options,
):
    """Generate a synthetic data set of raw counts.

    Returns AnnData: ``X`` CSR float32 integer counts (cells x genes; the spatial kind keeps only
    its gene panel), ``var_names`` gene ids, ``var["gene_symbol"]``; ``obs``: ``cell_type``,
    ``lineage``, ``donor``, ``batch``, ``study``, ``technology``, ``cycling`` and per kind
    ``time``/``fate``/``lineage_progress`` (timecourse), ``x``/``y``/``layer`` (spatial),
    ``condition`` (perturbation), ``is_novel_type`` (out_of_distribution);
    ``obsm["X_true"]`` the true latent state (float32, n_programs dims); ``uns["synthetic"]``
    the parameters, plus per-kind ground truth in ``uns``. ``options`` override the per-kind
    defaults (see ``_COMMON_DEFAULTS``/``_KIND_DEFAULTS``); ``n_jobs`` threads draw blocks in
    parallel without changing the result.
    """
    n = _check_n(n_cells)
    plan = _plan(kind, n_genes=n_genes, seed=seed, world_seed=world_seed, options=options)
    adata = _adata(plan, 0, n, n, n_jobs)
    _drop_unused(adata)
    return adata


def generate_chunks(
    kind: str,
    n_cells: int,
    *,
    chunk_size: int = 50_000,
    n_genes: int = 2000,
    seed: int = 0,
    world_seed: int = 0,
    n_jobs: int = 1,
    **options,
) -> Iterator:
    """Yield the data set of :func:`generate` in consecutive chunks of ``chunk_size`` cells.

    Memory is bounded by the chunk. Categorical obs columns keep the data set's full category
    lists in every chunk, so the chunks concatenate (``anndata.concat``) to exactly
    :func:`generate`'s result (which drops unused categories). ``uns["synthetic"]["chunk"]`` holds
    ``[start, stop)``.
    """
    n = _check_n(n_cells)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    plan = _plan(kind, n_genes=n_genes, seed=seed, world_seed=world_seed, options=options)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        adata = _adata(plan, start, stop, n, n_jobs)
        adata.uns["synthetic"]["chunk"] = [start, stop]
        yield adata


def write_h5ad_chunked(
    path: str | os.PathLike,
    kind: str,
    n_cells: int,
    chunk_size: int = 50_000,
    *,
    compression: str | None = None,
    **kw,
) -> None:
    """Write :func:`generate`'s data set to ``path`` (h5ad) chunk by chunk, atomically.

    ``X`` is appended to on-disk CSR datasets, so memory holds one chunk plus obs and
    ``obsm["X_true"]`` (a few dozen bytes per cell). Reading the file back gives the same AnnData
    as ``generate(kind, n_cells, **kw)``.
    """
    import h5py

    try:
        from anndata.io import sparse_dataset, write_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import sparse_dataset, write_elem

    from scjepa.io import CSRAppender, atomic_path

    n = _check_n(n_cells)
    obs_parts, true_parts = [], []
    extra_obsm: list[np.ndarray] = []
    first = None
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            # CSRAppender, not anndata's append: the latter's memory grows with every block
            for chunk in generate_chunks(kind, n, chunk_size=chunk_size, **kw):
                X = sp.csr_matrix(chunk.X)
                if first is None:
                    first = chunk
                    X_disk = CSRAppender(f, "X", X.shape[1], dtype=X.dtype, compression=compression)
                X_disk.append(X)
                obs_parts.append(chunk.obs)
                true_parts.append(chunk.obsm["X_true"])
                if "spatial" in chunk.obsm:
                    extra_obsm.append(chunk.obsm["spatial"])
            obs = pd.concat(obs_parts)
            del obs_parts
            for col in obs.columns:
                if isinstance(obs[col].dtype, pd.CategoricalDtype):
                    obs[col] = obs[col].cat.remove_unused_categories()
            uns = dict(first.uns)
            uns["synthetic"] = {k: v for k, v in uns["synthetic"].items() if k != "chunk"}
            obsm = {"X_true": np.concatenate(true_parts)}
            if extra_obsm:
                obsm["spatial"] = np.concatenate(extra_obsm)
            write_elem(f, "obs", obs)
            write_elem(f, "var", first.var)
            write_elem(f, "obsm", obsm)
            write_elem(f, "uns", uns)
            for key in ("layers", "obsp", "varm", "varp"):
                write_elem(f, key, {})
            f.attrs["encoding-type"] = "anndata"
            f.attrs["encoding-version"] = "0.1.0"


# --------------------------------------------------------------------------------------------
# the cell-type hierarchy as ontology terms (for scTab's hierarchy-corrected F1, scjepa.ontology)

#: Prefix of the synthetic term ids. Not a registered OBO prefix, so an id can never be mistaken for
#: a Cell Ontology term.
ONTOLOGY_PREFIX = "SYNCL"
_ROOT_NAME = "cell"
_NOVEL_OFFSET = 500  # novel subtypes of a lineage are numbered from here, regular ones below it


def _term_id(number: int) -> str:
    return f"{ONTOLOGY_PREFIX}:{number:07d}"


def cell_type_terms(n_types: int = 16, n_novel_types: int = len(_NOVEL_CATALOG)) -> pd.DataFrame:
    """The world's cell-type lineage as ontology terms: the root, every lineage, every type.

    One row per term, columns ``term_id`` (``"SYNCL:nnnnnnn"``), ``name``, ``parent_id`` (None for
    the root) and ``level`` (``"root"``, ``"lineage"``, ``"type"``, ``"novel type"``). Type names are
    spelt exactly as ``obs["cell_type"]`` of the generated data ("lineage/subtype"), so the name ->
    id map needs no new obs column; novel types are the out-of-distribution study's first
    ``n_novel_types`` (named under the same lineage fallback as :meth:`World.novel_types`).
    ``n_types`` is the generator option of the same name (default 16).

    The tree is root -> lineage -> type (a type ``is_a`` its lineage). Ids depend on a term's place in
    the catalogs only (lineage ``L`` = 1-based catalog position: ``L·1000``; its subtype of rank ``r``:
    ``L·1000 + 1 + r``; its novel subtype ``j``: ``L·1000 + 500 + j``), so a type keeps its id whatever
    ``n_types``. A pure function of the catalogs: no random draw, and the generator's output is
    untouched.
    """
    if n_types < 2:
        raise ValueError(f"n_types must be >= 2, got {n_types}")
    if not 0 <= n_novel_types <= len(_NOVEL_CATALOG):
        raise ValueError(f"n_novel_types must be in [0, {len(_NOVEL_CATALOG)}], got {n_novel_types}")
    catalog_index = {lin: i + 1 for i, (lin, _) in enumerate(_CATALOG)}
    types = _type_catalog(n_types)
    present = list(dict.fromkeys(lin for lin, _ in types))
    rows = [(_term_id(0), _ROOT_NAME, None, "root")]
    rows += [(_term_id(catalog_index[lin] * 1000), lin, _term_id(0), "lineage") for lin in present]
    rank: dict[str, int] = {}
    for lin, sub in types:  # _type_catalog deals ranks in order within each lineage
        r = rank.get(lin, 0)
        rank[lin] = r + 1
        if r + 1 >= _NOVEL_OFFSET:
            raise ValueError(f"n_types={n_types} exceeds the id space of lineage '{lin}'")
        base = catalog_index[lin] * 1000
        rows.append((_term_id(base + 1 + r), f"{lin}/{sub}", _term_id(base), "type"))
    for j, (lineage, sub) in enumerate(_NOVEL_CATALOG[:n_novel_types]):
        lin = lineage if lineage in present else present[0]  # World.novel_types' fallback
        base = catalog_index[lin] * 1000
        rows.append((_term_id(base + _NOVEL_OFFSET + j), f"{lin}/{sub}", _term_id(base), "novel type"))
    return pd.DataFrame(rows, columns=["term_id", "name", "parent_id", "level"])


def cell_type_term_ids(n_types: int = 16, n_novel_types: int = len(_NOVEL_CATALOG)) -> dict[str, str]:
    """Name -> term id of every term of :func:`cell_type_terms` (cell types, lineages, the root)."""
    terms = cell_type_terms(n_types, n_novel_types)
    return dict(zip(terms["name"], terms["term_id"]))
