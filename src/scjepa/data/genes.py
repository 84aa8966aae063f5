"""The run's gene space and the alignment of a dataset to it (match by id, zero-fill the rest)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
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

    def alignment(self, source_ids, *, path=None, min_coverage: float = 0.5, source_symbols=None) -> Alignment:
        """Match ``source_ids`` to the space by id; fall back to symbols if ids match nothing.

        Raises InputError naming the file when the source has duplicate ids, when nothing matches,
        or when the coverage (fraction of the space measured) is below ``min_coverage``.
        """
        src = pd.Index(np.asarray(source_ids).astype(str))
        if src.has_duplicates:
            raise InputError(f"duplicate gene ids (e.g. '{src[src.duplicated()][0]}')", path=path, column="var_names")
        matched_by = "id"
        pos = self.ids.get_indexer(src)
        if (pos < 0).all():
            # Gene symbols where ids were expected: map through the space's symbols, and say so.
            sym_space = pd.Index(self.symbols)
            if not sym_space.has_duplicates:
                pos_sym = sym_space.get_indexer(src)
                if (pos_sym >= 0).any():
                    pos, matched_by = pos_sym, "symbol"
                    log.warning("%s: gene ids match nothing; matched %d genes by symbol", path, (pos >= 0).sum())
        if (pos < 0).all():
            raise InputError(
                f"none of its {len(src)} gene ids (e.g. '{src[0]}') match the corpus gene space "
                f"(e.g. '{self.ids[0]}'), neither as ids nor as symbols; set the dataset's columns.gene_ids "
                "to the var column holding the ids the corpus uses",
                path=path,
                column="var_names",
            )
        src_cols = np.flatnonzero(pos >= 0)
        al = Alignment(src_cols=src_cols, dst_cols=pos[src_cols], n_space=len(self), matched_by=matched_by)
        if al.coverage < min_coverage:
            raise InputError(
                f"measures {al.n_matched} of the {len(self)} corpus genes (coverage {al.coverage:.1%}), below "
                f"the minimum {min_coverage:.0%}; lower this dataset's min_coverage if that is intended "
                "(e.g. a spatial gene panel)",
                path=path,
                column="var_names",
            )
        return al
