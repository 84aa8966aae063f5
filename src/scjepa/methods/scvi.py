"""scVI baseline (scvi-tools), trained per evaluation dataset on raw counts (docs/PROTOCOL.md §2.4).

scVI is an *integration* baseline: it is fitted on each evaluation dataset separately (transductive),
on ``layers["counts"]`` of the processed dataset, with ``obs["batch"]`` as its batch covariate, and its
latent posterior mean is the embedding. There is no pretrained scVI model that is applied to new data;
the workflow calls :func:`scjepa.methods.per_dataset.embed_dataset` once per dataset.

Choices (all hyper-parameters are config values):

* ``n_latent=64`` to match the 64-dim embeddings of the other methods; ``n_layers=5``,
  ``gene_likelihood="nb"`` as in ssl_in_scg's scVI baseline (``tester/embedding/train_scvi.py``);
  ``n_hidden=128``, ``dropout_rate=0.1``, ``dispersion="gene"`` are scvi-tools' defaults.
* Raw integer counts, never ``expm1(X)`` (scvi-tools maintainers, scverse/scvi-tools#2620; ssl_in_scg
  trained on normalised values). Non-integer or negative counts raise :class:`InputError`.
* ``max_epochs`` is explicit (scvi-tools' heuristic ``min(round(20000/n·400), 400)`` depends on the
  dataset size, so runs would not be comparable across datasets).
* **KL warm-up**: scvi-tools' ``TrainingPlan`` ramps the KL weight linearly from 0 to 1 over
  ``n_epochs_kl_warmup=400`` epochs (weight at 0-based epoch ``e`` is ``e / n_epochs_kl_warmup``). With
  fewer epochs than that, the KL weight never reaches 1 and the model is not the scVI of the paper
  (e.g. 50 epochs → final weight 0.12). We therefore pass ``n_epochs_kl_warmup`` explicitly; the
  default (``None``) is ``max_epochs // 2``, so the second half of training optimises the full ELBO. A
  value ``>= max_epochs`` is rejected because the weight would never reach 1.
* Seeding goes through ``scvi.settings.seed`` (Lightning ``seed_everything``); on CPU the same seed gives
  the same embedding. ``scvi.settings.dl_num_workers = 0`` (in-memory data; worker processes only cost).
* Accelerator: ``"gpu"`` when CUDA is available, else ``"cpu"``.

``transform`` is *not* a general out-of-sample encoder: it only works for cells with the training
genes and batch categories seen in training (scVI's encoder is conditioned on the batch). New batches
would need scArches-style query training (``SCVI.load_query_data``), which this benchmark does not use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scjepa.errors import InputError
from scjepa.io import atomic_path
from scjepa.methods.per_dataset import check_batch_column

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# input check (raw counts: scVI's likelihood is on integer counts)


def check_counts_layer(adata, layer: str = "counts", *, path=None, chunk: int = 5_000_000) -> None:
    """Raise InputError (naming the file and layer) unless ``adata.layers[layer]`` holds counts.

    Counts are finite, non-negative and integer-valued (stored as float32 in the processed file).
    Checked in chunks of the stored values, so memory stays bounded.
    """
    path = path if path is not None else getattr(adata, "filename", None)
    if layer not in adata.layers:
        raise InputError(
            f"layer '{layer}' (raw counts, needed by scVI) is missing; layers present: "
            f"{sorted(adata.layers.keys()) or 'none'}",
            path=path,
            key=f"layers/{layer}",
        )
    X = adata.layers[layer]
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    for start in range(0, data.size, chunk):
        block = np.asarray(data[start : start + chunk], dtype=np.float64)
        if not np.isfinite(block).all():
            raise InputError(f"layer '{layer}' contains NaN or inf", path=path, key=f"layers/{layer}")
        if (block < 0).any():
            raise InputError(
                f"layer '{layer}' contains negative values; raw counts are expected",
                path=path,
                key=f"layers/{layer}",
            )
        frac = np.abs(block - np.round(block)) > 1e-6
        if frac.any():
            raise InputError(
                f"layer '{layer}' holds non-integer values (e.g. {block[frac][0]:.4g}); scVI needs raw "
                "counts, not normalised or log-transformed values",
                path=path,
                key=f"layers/{layer}",
            )


# ----------------------------------------------------------------------------------------------
# scVI


def _quiet_logging() -> None:
    import scvi

    scvi.settings.verbosity = logging.WARNING
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def _quiet_lightning():
    """Silence Lightning warnings that say nothing about the run (SLURM hint, logging interval)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*srun.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        yield


def _accelerator() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


@dataclass
class SCVIMethod:
    """scVI on raw counts (sklearn-like: hyper-parameters in the constructor, learned state ends in ``_``)."""

    max_epochs: int = 50
    n_latent: int = 64
    n_layers: int = 5
    n_hidden: int = 128
    dropout_rate: float = 0.1
    gene_likelihood: str = "nb"
    dispersion: str = "gene"
    batch_size: int = 128
    lr: float = 1e-3
    n_epochs_kl_warmup: int | None = None  # None -> max_epochs // 2 (see module docstring)
    train_size: float = 0.9
    early_stopping: bool = False
    counts_layer: str = "counts"
    batch_key: str = "batch"
    seed: int = 0
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if int(self.max_epochs) < 1:
            raise InputError(f"max_epochs must be >= 1, got {self.max_epochs}", key="max_epochs")
        if self.gene_likelihood not in ("nb", "zinb", "poisson"):
            raise InputError(
                f"gene_likelihood must be one of nb, zinb, poisson, got {self.gene_likelihood!r}",
                key="gene_likelihood",
            )
        warm = self.kl_warmup_epochs
        if warm < 0 or (warm > 0 and warm >= int(self.max_epochs)):
            raise InputError(
                f"n_epochs_kl_warmup={warm} must be in [0, max_epochs - 1 = {int(self.max_epochs) - 1}] "
                "so that the KL weight reaches 1 before training ends (scvi-tools' default of 400 "
                "warm-up epochs would leave it below 1)",
                key="n_epochs_kl_warmup",
            )

    # -- derived ---------------------------------------------------------------------------
    @property
    def kl_warmup_epochs(self) -> int:
        if self.n_epochs_kl_warmup is None:
            return int(self.max_epochs) // 2
        return int(self.n_epochs_kl_warmup)

    def get_params(self) -> dict:
        return dataclasses.asdict(self)

    # -- data ------------------------------------------------------------------------------
    def _scvi_adata(self, adata, *, path=None):
        """A minimal AnnData for scvi-tools: X = raw counts (CSR float32), obs = the batch column only.

        Keeps scvi-tools' ``setup_anndata`` from writing into the caller's object and avoids copying
        the log-normalised X.
        """
        import anndata as ad

        check_counts_layer(adata, self.counts_layer, path=path)
        batch = check_batch_column(adata, self.batch_key, path=path)
        X = adata.layers[self.counts_layer]
        X = sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else X.tocsr().astype(np.float32)
        obs = pd.DataFrame({"batch": batch}, index=adata.obs_names.copy())
        return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=adata.var_names.copy()))

    # -- fit -------------------------------------------------------------------------------
    def fit(self, adata, *, path=None) -> "SCVIMethod":
        import scvi

        _quiet_logging()
        scvi.settings.dl_num_workers = 0
        scvi.settings.seed = int(self.seed)
        sadata = self._scvi_adata(adata, path=path)
        scvi.model.SCVI.setup_anndata(sadata, batch_key="batch")
        model = scvi.model.SCVI(
            sadata,
            n_hidden=int(self.n_hidden),
            n_latent=int(self.n_latent),
            n_layers=int(self.n_layers),
            dropout_rate=float(self.dropout_rate),
            dispersion=self.dispersion,
            gene_likelihood=self.gene_likelihood,
        )
        with _quiet_lightning():
            model.train(
                max_epochs=int(self.max_epochs),
                accelerator=_accelerator(),
                devices=1,
                batch_size=int(self.batch_size),
                train_size=float(self.train_size),
                early_stopping=bool(self.early_stopping),
                plan_kwargs={"lr": float(self.lr), "n_epochs_kl_warmup": self.kl_warmup_epochs},
                enable_progress_bar=bool(self.progress_bar),
                enable_model_summary=False,
            )
        self.model_ = model
        self.adata_ = sadata
        self.var_names_ = list(sadata.var_names)
        self.batches_ = list(sadata.obs["batch"].cat.categories)
        self.n_genes_ = sadata.n_vars
        return self

    def _latent(self, sadata) -> np.ndarray:
        z = self.model_.get_latent_representation(sadata, give_mean=True, batch_size=4096)
        z = np.asarray(z, dtype=np.float32)
        if not np.isfinite(z).all():
            raise FloatingPointError("scVI produced a non-finite latent representation (training diverged?)")
        return z

    def fit_transform(self, adata, *, path=None) -> np.ndarray:
        """Fit on ``adata`` and return the latent posterior means, (n_cells, n_latent) float32."""
        self.fit(adata, path=path)
        return self._latent(self.adata_)

    def transform(self, adata, *, path=None) -> np.ndarray:
        """Latent means for cells with the training genes and *seen* batches only (see module docstring)."""
        self._check_fitted()
        if list(adata.var_names) != self.var_names_:
            raise InputError(
                "genes differ from the ones scVI was trained on; scVI is fitted per dataset "
                "(use fit_transform)",
                path=path,
            )
        sadata = self._scvi_adata(adata, path=path)
        unseen = sorted(set(sadata.obs["batch"].cat.categories) - set(self.batches_))
        if unseen:
            raise InputError(
                f"batches {unseen[:5]} were not seen in training; scVI's encoder is conditioned on the "
                "batch, so it cannot embed new batches without query training",
                path=path,
                column=self.batch_key,
            )
        sadata.obs["batch"] = pd.Categorical(sadata.obs["batch"].astype(str), categories=self.batches_)
        return self._latent(sadata)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("SCVIMethod is not fitted; call fit or fit_transform first")

    # -- persistence -----------------------------------------------------------------------
    def save(self, out_dir, *, method: str | None = None) -> None:
        """Write the model directory atomically: scvi-tools' ``model.pt``, ``hparams.json``, ``genes.txt``,
        ``curve.csv`` (per-epoch ELBO terms and KL weight from the training history)."""
        self._check_fitted()
        out_dir = Path(out_dir)
        with atomic_path(out_dir, is_dir=True) as tmp:
            self.model_.save(str(tmp), overwrite=True, save_anndata=False)
            (tmp / "genes.txt").write_text("\n".join(self.var_names_) + "\n")
            hp = {
                "family": "scvi",
                "method": method or "scvi",
                "n_genes": self.n_genes_,
                "gene_ids_file": "genes.txt",
                "batches": self.batches_,
                "kl_warmup_epochs_effective": self.kl_warmup_epochs,
                **self.get_params(),
            }
            (tmp / "hparams.json").write_text(json.dumps(hp, indent=2, sort_keys=True) + "\n")
            self._history_frame().to_csv(tmp / "curve.csv", index=False)

    def _history_frame(self) -> pd.DataFrame:
        hist = getattr(self.model_, "history", None) or {}
        frames = [v for v in hist.values() if isinstance(v, pd.DataFrame)]
        if not frames:
            return pd.DataFrame({"epoch": []})
        df = pd.concat(frames, axis=1)
        df.index.name = "epoch"
        return df.reset_index()

    @classmethod
    def load(cls, out_dir, adata=None, *, path=None) -> "SCVIMethod":
        """Load a saved model for ``adata`` (the processed dataset it was trained on, or one with the
        same genes and batches). ``adata`` is required: scVI is transductive and the model directory
        does not store the data (``scjepa.methods.load_model(dir)`` therefore raises an InputError for
        scVI; the workflow uses :func:`scjepa.methods.per_dataset.embed_dataset`)."""
        import scvi

        if adata is None:
            raise InputError(
                "a saved scVI model needs the AnnData it was trained on (SCVIMethod.load(dir, adata)); "
                "scVI is fitted per dataset, use embed_dataset",
                path=out_dir,
            )

        _quiet_logging()
        out_dir = Path(out_dir)
        hp_path = out_dir / "hparams.json"
        if not hp_path.exists():
            raise InputError("hparams.json is missing; not a saved scVI model directory", path=out_dir)
        hp = json.loads(hp_path.read_text())
        if hp.get("family") != "scvi":
            raise InputError(f"family is {hp.get('family')!r}, not 'scvi'", path=hp_path, key="family")
        obj = cls(**{k: v for k, v in hp.items() if k in {f.name for f in dataclasses.fields(cls)}})
        sadata = obj._scvi_adata(adata, path=path)
        sadata.obs["batch"] = pd.Categorical(sadata.obs["batch"].astype(str), categories=hp["batches"])
        with _quiet_lightning():
            obj.model_ = scvi.model.SCVI.load(str(out_dir), adata=sadata, accelerator=_accelerator())
        obj.adata_ = sadata
        obj.var_names_ = list(sadata.var_names)
        obj.batches_ = list(hp["batches"])
        obj.n_genes_ = sadata.n_vars
        return obj


__all__ = ["SCVIMethod", "check_counts_layer"]
