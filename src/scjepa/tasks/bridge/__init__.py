"""Static Schrödinger bridges between snapshots, and the bridge benchmark built on them.

The modules read top-down: :mod:`.config`, :mod:`.plans` and :mod:`.couplings` (the bridge between
two snapshots), :mod:`.sampling`, :mod:`.spaces` (reference space, scale, W1), :mod:`.timecourse`
(leave-one-timepoint-out) and :mod:`.fates`, :mod:`.perturbation`, :mod:`.score` and :mod:`.entry` (the entry
point of ``workflow/scripts/score_bridge.py``). The choices behind the numbers, and how to read them, are in
docs/BRIDGE.md. The names below are the public API of the engine and the benchmark.
"""

from scjepa.tasks.bridge.config import BridgeConfig
from scjepa.tasks.bridge.couplings import Coupling, bridge_coupling
from scjepa.tasks.bridge.fates import fate_probabilities, fate_readout
from scjepa.tasks.bridge.perturbation import perturbation_transport
from scjepa.tasks.bridge.plans import check_coupling, entropic_plan, exact_plan, sq_euclidean_cost
from scjepa.tasks.bridge.sampling import bridge_noise_sd, chain_indices, sample_bridge, sample_paths
from scjepa.tasks.bridge.score import (
    BridgeResult,
    empty_samples,
    score_bridge,
    score_perturbation,
    score_timecourse,
    write_samples,
)
from scjepa.tasks.bridge.spaces import energy_distance, latent_scale, mmd_rbf, noise_factor, reference_space, w1, w2
from scjepa.tasks.bridge.timecourse import ESTIMATORS, TimeCourse, leave_one_timepoint_out, select_sigma

__all__ = [
    "BridgeConfig", "Coupling", "bridge_coupling", "fate_probabilities", "fate_readout", "perturbation_transport",
    "check_coupling", "entropic_plan", "exact_plan", "sq_euclidean_cost", "bridge_noise_sd", "chain_indices",
    "sample_bridge", "sample_paths", "BridgeResult", "empty_samples", "score_bridge", "score_perturbation",
    "score_timecourse", "write_samples", "latent_scale", "reference_space", "w1", "w2", "mmd_rbf", "energy_distance",
    "noise_factor", "TimeCourse", "ESTIMATORS", "leave_one_timepoint_out", "select_sigma",
]
