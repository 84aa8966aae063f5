"""Cell fates: terminal labels pulled back through chained couplings, scored against the truth."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scjepa.errors import InputError
from scjepa.tasks.bridge.couplings import Coupling
from scjepa.tasks.bridge.timecourse import TimeCourse


def fate_probabilities(couplings: Sequence[Coupling], terminal_labels: Sequence, classes: Sequence | None = None
                       ) -> tuple[list[np.ndarray], list]:
    """P(cell at time k ends in class f) by pulling terminal indicators back through the chain.

    ``couplings[k]`` couples snapshot k with k + 1; ``terminal_labels`` label the last snapshot.
    Returns ``([ (n_k, F) for k = 0..K−1 ], classes)``; rows sum to 1 (WOT's ``fates``).
    """
    labels = np.asarray(terminal_labels).astype(str)
    classes = sorted(set(labels)) if classes is None else [str(c) for c in classes]
    F = (labels[:, None] == np.asarray(classes)[None, :]).astype(np.float64)
    out = [F]
    for c in reversed(list(couplings)):
        F = c.conditional_mean(F)
        out.append(F)
    return out[::-1], classes


def fate_readout(tc: TimeCourse, fates: Sequence[np.ndarray], c: float) -> tuple[dict[str, float], list[Coupling]]:
    """Fate probabilities from consecutive latent couplings at σ = c·ŝ, scored against ground truth.

    ``fates[k]``: true fate label of each cell of snapshot k. Terminal classes are the labels seen
    at the last snapshot; cells of earlier snapshots whose label is one of them are scored.
    Chance: always predicting the most frequent terminal class (accuracy) / the terminal class
    frequencies (Brier score, log-loss). The Brier score Σ_f (p_f − y_f)² is a proper scoring rule in
    [0, 2] that stays finite for hard 0/1 fates; probabilities are clipped at 1e-3 for the log-loss
    (an exact plan gives hard 0/1 fates).
    """
    couplings = [tc.coupling(k, k + 1, c) for k in range(tc.K - 1)]
    terminal = np.asarray(fates[-1]).astype(str)  # cells without a fate (None) are not scored below
    probs, classes = fate_probabilities(couplings, terminal)
    prior = np.array([(terminal == f).mean() for f in classes])
    m: dict[str, float] = {}
    y_all, p_all = [], []
    for k in range(tc.K - 1):
        y = np.asarray(fates[k]).astype(str)
        keep = np.isin(y, classes)
        if not keep.any():
            continue
        yi = np.array([classes.index(v) for v in y[keep]])
        m[f"fate_accuracy_t{k}"] = float((probs[k][keep].argmax(axis=1) == yi).mean())
        y_all.append(yi)
        p_all.append(probs[k][keep])
    if not y_all:
        raise InputError("no cell before the last time point has a fate that is seen at the last time point",
                         column=tc.cfg.fate_key)
    y = np.concatenate(y_all)
    P = np.concatenate(p_all)
    Pc = np.clip(P, 1e-3, None)
    Pc /= Pc.sum(axis=1, keepdims=True)
    m["fate_accuracy"] = float((P.argmax(axis=1) == y).mean())
    m["fate_chance"] = float((y == int(prior.argmax())).mean())
    Y = np.zeros_like(P)
    Y[np.arange(len(y)), y] = 1.0
    m["fate_brier"] = float(((P - Y) ** 2).sum(axis=1).mean())
    m["fate_brier_chance"] = float(((prior[None, :] - Y) ** 2).sum(axis=1).mean())
    m["fate_logloss"] = float(-np.log(Pc[np.arange(len(y)), y]).mean())
    m["fate_logloss_chance"] = float(-np.log(np.clip(prior, 1e-3, None)[y]).mean())
    m["fate_sigma"] = float(c)
    m["fate_n_cells"] = float(len(y))
    return m, couplings
