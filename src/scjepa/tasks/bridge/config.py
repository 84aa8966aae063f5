"""The bridge benchmark's configuration: every knob, checked (the ``tasks.bridge`` config block)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from scjepa.errors import InputError


@dataclass
class BridgeConfig:
    """Every knob of the bridge benchmark; ``from_dict`` rejects unknown keys by name."""

    sigmas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5)  # σ grid, units of the latent scale ŝ
    reference_row: bool = True  # the bridge in the reference space itself ("expression PCs" row; same in every job)
    select_on: str = "energy"  # validation statistic σ is chosen on: "energy" (unbiased energy distance) or "w1"
    sigma_default: float | None = None  # used when no validation triple exists (None: grid median)
    seeds: tuple[int, ...] = (0, 1, 2)  # bridge-sampling seeds (and perturbation splits)
    reference_dims: int = 5  # PCs of log-normalised expression: the shared scoring space
    whiten: bool = True  # unit-variance reference PCs (published 5-D protocol)
    max_cells_per_time: int = 2000  # subsample each snapshot / condition to at most this
    max_eval_cells: int | None = None  # W1 on at most this many cells per side (None: all)
    max_dense_cells: int = 10000  # entropic plans: above this many cells per side, mini-batch OT
    max_exact_cells: int = 5000  # exact plans (network simplex, ~O(n³)): above this, mini-batch OT
    batch_size: int = 2048  # mini-batch size of the large-n path
    time_parameter: str = "index"  # "index" or "real"
    solver: str = "sinkhorn_log"  # POT method of the entropic plan
    tol: float = 1e-3  # L1 marginal error (and mass error) a plan may have
    num_iter_max: int = 20000  # Sinkhorn iterations before the plan is declared non-converged
    subsample_seed: int = 0  # cell subsamples (shared by every method)
    control: str = "control"  # control label of the condition column
    top_genes: int = 50  # marker genes of the CellOT metrics
    min_cells_per_type: int = 5  # per-cell-type perturbation metrics need this many cells
    time_key: str = "time"
    fate_key: str = "fate"
    condition_key: str = "condition"
    cell_type_key: str = "cell_type"
    n_paths: int = 60  # bridge paths stored for the figure
    path_steps: int = 8  # points per interval on a stored path
    figure_cells_per_time: int = 300  # snapshot cells stored for the figure

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "BridgeConfig":
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown bridge option(s) {unknown}; known: {sorted(names)}", key="tasks.bridge")
        d = {k: v for k, v in d.items() if v is not None or k in ("sigma_default", "max_eval_cells")}
        cfg = cls(**d)
        cfg.sigmas = tuple(float(s) for s in cfg.sigmas)
        cfg.seeds = tuple(int(s) for s in cfg.seeds)
        if not cfg.sigmas or any(not math.isfinite(s) or s < 0 for s in cfg.sigmas):
            raise InputError(f"sigmas must be a non-empty list of numbers >= 0, got {list(cfg.sigmas)}", key="sigmas")
        if not cfg.seeds:
            raise InputError("seeds must not be empty", key="seeds")
        if cfg.time_parameter not in ("index", "real"):
            raise InputError(f"time_parameter must be 'index' or 'real', got {cfg.time_parameter!r}", key="time_parameter")
        if cfg.select_on not in ("energy", "w1"):
            raise InputError(f"select_on must be 'energy' or 'w1', got {cfg.select_on!r}", key="select_on")
        if cfg.reference_dims < 1:
            raise InputError("reference_dims must be >= 1", key="reference_dims")
        if min(cfg.max_cells_per_time, cfg.batch_size, cfg.max_dense_cells, cfg.max_exact_cells) < 2:
            raise InputError("max_cells_per_time, batch_size, max_dense_cells and max_exact_cells must be >= 2",
                             key="tasks.bridge")
        return cfg

    @property
    def sigma_fallback(self) -> float:
        if self.sigma_default is not None:
            return float(self.sigma_default)
        return float(sorted(self.sigmas)[len(self.sigmas) // 2])

    def coupling_kwargs(self) -> dict:
        """Keyword arguments of :func:`bridge_coupling` from this config."""
        return dict(max_dense_cells=self.max_dense_cells, max_exact_cells=self.max_exact_cells,
                    batch_size=self.batch_size, solver=self.solver, tol=self.tol, num_iter_max=self.num_iter_max)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["sigmas"], d["seeds"] = list(self.sigmas), list(self.seeds)
        return d
