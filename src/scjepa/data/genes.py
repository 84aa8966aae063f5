"""The run's gene space and the alignment of a dataset to it (match by id, zero-fill the rest)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scjepa.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Alignment:
    """Column map from a source's genes into the gene space."""

    src_cols: np.ndarray  # source column index of each matched gene
    dst_cols: np.ndarray  # gene-space column index of each matched gene
    n_space: int
    matched_by: str  # "id" or "symbol"
    n_by_id: int = 0  # source genes that match by id
    n_by_symbol: int = 0  # ... and through unambiguous symbols
    ambiguous_symbols: list = field(default_factory=list)  # symbols left out: several genes carry them

    @property
    def n_matched(self) -> int:
        return int(len(self.dst_cols))

    @property
    def coverage(self) -> float:
        """Fraction of the gene space that the source measures."""
        return self.n_matched / self.n_space

    @property
    def present(self) -> np.ndarray:
        out = np.zeros(self.n_space, dtype=bool)
        out[self.dst_cols] = True
        return out

    def apply(self, block: sp.spmatrix) -> sp.csr_matrix:
        """(n, n_source) -> (n, n_space): matched genes moved into place, the rest zero."""
        block = sp.csc_matrix(block)[:, self.src_cols]
        perm = sp.csr_matrix(
            (np.ones(len(self.dst_cols)), (np.arange(len(self.dst_cols)), self.dst_cols)),
            shape=(len(self.dst_cols), self.n_space),
        )
        out = sp.csr_matrix(block @ perm)
        out.sort_indices()
        return out


class GeneSpace:
    """Ordered gene ids (and symbols) that every processed dataset is aligned to."""

    def __init__(self, ids, symbols=None):
        self.ids = pd.Index(np.asarray(ids).astype(str))
        if self.ids.has_duplicates:
            raise InputError(f"gene space has duplicate ids (e.g. '{self.ids[self.ids.duplicated()][0]}')")
        self.symbols = (
            pd.Index(np.asarray(symbols).astype(str)) if symbols is not None else pd.Index(self.ids)
        )

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def read(cls, path: str | Path) -> "GeneSpace":
        df = pd.read_csv(path, sep="\t", dtype=str)
        for col in ("gene_id", "gene_symbol"):
            if col not in df.columns:
                raise InputError("gene space table lacks a column", path=path, column=col)
        return cls(df["gene_id"], df["gene_symbol"].fillna(""))

    def write(self, path: str | Path) -> None:
        from scjepa.io import write_text

        df = pd.DataFrame({"gene_id": self.ids, "gene_symbol": self.symbols})
        write_text(df.to_csv(sep="\t", index=False), path)

    def alignment(self, source_ids, *, path=None, min_coverage: float = 0.5, source_symbols=None,
                  key: str | None = None) -> Alignment:
        """Match ``source_ids`` to the space by id, or by symbol when ids fall short.

        Ids are used when they reach ``min_coverage``. Otherwise the source's names (its ids, and
        ``source_symbols`` when given) are matched to the space's gene symbols; symbols that occur
        more than once on either side are ambiguous and left out (counted in ``ambiguous`` and
        logged with examples), never silently switching matching off. Symbols are taken when they
        cover more of the space than ids do. Raises InputError naming the file when the source has
        duplicate ids, or when the best match stays below ``min_coverage``: the message gives the
        counts by id and by symbol, and says whether the file looks like a gene panel (most of its
        genes matched: lower ``min_coverage``) or names its genes differently (set ``gene_ids``).
        ``key`` is the config key the message points at (e.g. ``datasets.<name>``).
        """
        src = pd.Index(np.asarray(source_ids).astype(str))
        if src.has_duplicates:
            raise InputError(f"duplicate gene ids (e.g. '{src[src.duplicated()][0]}')", path=path, column="var_names")
        id_pos = self.ids.get_indexer(src)
        n_id = int((id_pos >= 0).sum())
        sym_pos, ambiguous = self._symbol_positions(src, source_symbols)
        n_sym = int((sym_pos >= 0).sum())
        pos, matched_by = id_pos, "id"
        if n_id / len(self) < min_coverage and n_sym > n_id:
            pos, matched_by = sym_pos, "symbol"
            log.warning("%s: %d genes match the corpus by id, %d by symbol: matching by symbol", path, n_id, n_sym)
        if ambiguous:
            log.warning("%s: %d gene symbol(s) are ambiguous (more than one gene carries them) and are not "
                        "matched by symbol, e.g. %s", path, len(ambiguous), ", ".join(ambiguous[:5]))
        src_cols = np.flatnonzero(pos >= 0)
        al = Alignment(src_cols=src_cols, dst_cols=pos[src_cols], n_space=len(self), matched_by=matched_by,
                       n_by_id=n_id, n_by_symbol=n_sym, ambiguous_symbols=list(ambiguous))
        where = f" ({key}.min_coverage)" if key else ""
        counts = (f"{n_id} of its {len(src)} genes match the corpus gene space by id and {n_sym} by symbol"
                  + (f" ({len(ambiguous)} ambiguous symbols left out, e.g. {', '.join(ambiguous[:3])})"
                     if ambiguous else ""))
        if al.n_matched == 0:
            raise InputError(
                f"{counts}: none match (its ids look like '{src[0]}', the corpus's like '{self.ids[0]}'). "
                f"Set {key + '.' if key else ''}columns.gene_ids to the var column holding the ids the corpus uses",
                path=path, column="var_names")
        if al.coverage < min_coverage:
            panel = al.n_matched >= 0.8 * len(src)
            fix = (f"it looks like a gene panel (most of its genes matched): lower min_coverage{where} if that "
                   "is intended" if panel else
                   f"most of its genes did not match, so the names probably differ from the corpus's (its ids "
                   f"look like '{src[0]}', the corpus's like '{self.ids[0]}'): set "
                   f"{key + '.' if key else ''}columns.gene_ids to the var column holding the corpus's ids")
            raise InputError(
                f"{counts}; the best ({matched_by}) covers {al.n_matched} of the {len(self)} corpus genes "
                f"(coverage {al.coverage:.1%}), below the minimum {min_coverage:.0%}. {fix}",
                path=path,
                column="var_names",
            )
        return al

    def _symbol_positions(self, source_ids: pd.Index, source_symbols=None) -> tuple[np.ndarray, list[str]]:
        """Space column of each source gene matched through unambiguous symbols (-1: none), and the
        ambiguous symbols (carried by several space genes, or by several source genes)."""
        space = pd.Series(np.asarray(self.symbols).astype(str))
        dup_space = set(space[space.duplicated(keep=False) & (space != "")])
        unique = space[~space.isin(dup_space) & (space != "")]
        lookup = pd.Index(unique.to_numpy())
        cols = unique.index.to_numpy()
        best = np.full(len(source_ids), -1)
        ambiguous: set[str] = set()
        candidates = [source_ids]
        if source_symbols is not None:
            candidates.append(pd.Index(np.asarray(source_symbols).astype(str)))
        for names in candidates:
            names_s = pd.Series(np.asarray(names))
            dup_src = set(names_s[names_s.duplicated(keep=False)])
            hit = lookup.get_indexer(names_s.to_numpy())
            ok = (hit >= 0) & ~names_s.isin(dup_src).to_numpy()
            ambiguous |= (dup_space | dup_src) & set(names_s)
            pos = np.where(ok, cols[np.maximum(hit, 0)], -1)
            if (pos >= 0).sum() > (best >= 0).sum():
                best = pos
        return best, sorted(ambiguous)


def gene_space_of(source, gene_ids_column: str | None = None) -> GeneSpace:
    """The gene space a source defines: an h5ad's genes (ids from ``var[gene_ids_column]`` or its var names;
    symbols from ``gene_symbol`` / ``feature_name`` when present) or a gene table file (gene_id, gene_symbol)."""
    source = Path(source)
    if source.suffix != ".h5ad":
        return GeneSpace.read(source)
    from scjepa.io import read_h5ad

    adata = read_h5ad(source, backed="r")
    try:
        if gene_ids_column and gene_ids_column not in adata.var.columns:
            raise InputError("gene id column not found in var", path=source, column=gene_ids_column)
        ids = adata.var[gene_ids_column] if gene_ids_column else adata.var_names
        symbols = next((adata.var[c] for c in ("gene_symbol", "feature_name") if c in adata.var), ids)
        return GeneSpace(pd.Index(ids).astype(str), pd.Index(symbols).astype(str))
    finally:
        adata.file.close()


def gene_space_rule(rule) -> GeneSpace:
    """Rule ``define_gene_space``: ``input.source`` -> ``output.genes`` (gene_id, gene_symbol)."""
    space = gene_space_of(rule.input["source"], rule.params.get("gene_ids_column"))
    space.write(rule.output["genes"])
    log.info("gene space: %d genes from %s", len(space), rule.input["source"])
    return space
