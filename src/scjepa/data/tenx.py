"""Reader of a zip archive of 10x Genomics matrix directories (``format: 10x_zip`` of a ``url`` source).

Some data sets are published only as Cell Ranger outputs zipped together, one directory per sample
(e.g. the Embryoid Body time course of Moon et al. 2019: ``T0_1A/``, ``T2_3B/``, ... each with
``matrix.mtx``, ``genes.tsv``, ``barcodes.tsv``). :func:`read_10x_zip` turns such an archive into one
AnnData with the raw counts in ``X``:

* every directory holding ``matrix.mtx`` (or ``matrix.mtx.gz``) with ``genes.tsv`` / ``features.tsv``
  and ``barcodes.tsv`` (each optionally ``.gz``) is one sample, found at any depth, also inside zips
  nested in the archive (Mendeley wraps the uploaded ``scRNAseq.zip`` in a zip of its own);
  ``__MACOSX/`` entries are ignored;
* samples are concatenated in the order of their directory names; ``obs["sample"]`` holds the
  directory name, ``obs_names`` are ``<sample>_<barcode>``;
* ``var_names`` are the first column of the genes file (Ensembl ids for Cell Ranger), ``var
  ["feature_name"]`` the second (symbols); every sample must list the same genes in the same order.

Nothing is normalised or filtered: the archive's counts are what preprocessing checks and normalises.
"""

from __future__ import annotations

import gzip
import io
import posixpath
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scjepa.errors import InputError

_MATRIX = ("matrix.mtx", "matrix.mtx.gz")
_GENES = ("features.tsv", "features.tsv.gz", "genes.tsv", "genes.tsv.gz")
_BARCODES = ("barcodes.tsv", "barcodes.tsv.gz")


def _members(zf: zipfile.ZipFile, prefix: str = ""):
    """(path, reader) of every file in ``zf`` and in zips nested in it."""
    for name in zf.namelist():
        if name.endswith("/") or name.startswith("__MACOSX/") or "/__MACOSX/" in name:
            continue
        if name.lower().endswith(".zip"):
            inner = zipfile.ZipFile(io.BytesIO(zf.read(name)))
            yield from _members(inner, prefix + name[: -len(".zip")] + "/")
        else:
            yield prefix + name, (lambda z=zf, n=name: z.read(n))


def _text(data: bytes, name: str) -> bytes:
    return gzip.decompress(data) if name.endswith(".gz") else data


def read_10x_zip(path: str | Path):
    """The archive at ``path`` as one AnnData (counts in X, obs ``sample``); InputError naming it if unusable."""
    import anndata as ad
    from scipy.io import mmread

    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"is not a readable zip archive ({exc})", path=path) from None
    with zf:
        files: dict[str, dict[str, tuple[str, object]]] = {}
        for name, read in _members(zf):
            folder, base = posixpath.split(name)
            for kind, names in (("matrix", _MATRIX), ("genes", _GENES), ("barcodes", _BARCODES)):
                if base in names:
                    files.setdefault(folder, {}).setdefault(kind, (base, read))
        samples = {d: f for d, f in files.items() if "matrix" in f}
        if not samples:
            raise InputError("holds no 10x matrix directory (matrix.mtx with genes.tsv/features.tsv and "
                             "barcodes.tsv, optionally .gz)", path=path)
        order = sorted(samples, key=lambda d: (posixpath.basename(d), d))
        names = [posixpath.basename(d) or d for d in order]
        if len(set(names)) != len(names):
            raise InputError(f"two matrix directories share a name ({sorted(names)}); samples are named by "
                             "their directory", path=path)
        blocks, obs_frames, var = [], [], None
        for folder, sample in zip(order, names):
            f = samples[folder]
            missing = [k for k in ("genes", "barcodes") if k not in f]
            if missing:
                raise InputError(f"directory '{folder}' has a matrix but no {' or '.join(missing)} file",
                                 path=path)
            (mname, mread), (gname, gread), (bname, bread) = f["matrix"], f["genes"], f["barcodes"]
            M = sp.csr_matrix(mmread(io.BytesIO(_text(mread(), mname))).T, dtype=np.float32)
            genes = pd.read_csv(io.BytesIO(_text(gread(), gname)), sep="\t", header=None, dtype=str)
            barcodes = pd.read_csv(io.BytesIO(_text(bread(), bname)), sep="\t", header=None, dtype=str)[0]
            if M.shape != (len(barcodes), len(genes)):
                raise InputError(f"directory '{folder}': matrix is {M.shape[1]} genes x {M.shape[0]} cells "
                                 f"but the files list {len(genes)} genes and {len(barcodes)} barcodes", path=path)
            this_var = pd.DataFrame({"feature_name": (genes[1] if genes.shape[1] > 1 else genes[0]).to_numpy()},
                                    index=pd.Index(genes[0].to_numpy(), name=None))
            if var is None:
                var = this_var
            elif not var.index.equals(this_var.index):
                raise InputError(f"directory '{folder}' lists other genes than '{order[0]}'; every sample "
                                 "must share one gene list", path=path)
            blocks.append(M)
            obs_frames.append(pd.DataFrame({"sample": sample, "barcode": barcodes.to_numpy()},
                                           index=[f"{sample}_{b}" for b in barcodes]))
    obs = pd.concat(obs_frames)
    obs["sample"] = pd.Categorical(obs["sample"], categories=names)
    return ad.AnnData(X=sp.vstack(blocks, format="csr"), obs=obs, var=var)


def convert_10x_zip(zip_path: str | Path, dest: str | Path) -> None:
    """Write :func:`read_10x_zip` of ``zip_path`` to ``dest`` (an h5ad, atomically)."""
    from scjepa.io import write_h5ad

    write_h5ad(read_10x_zip(zip_path), dest)
