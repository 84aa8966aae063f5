"""Donor-level train/val/test split (scTab's rule): cells of one donor never straddle splits."""

from __future__ import annotations

import numpy as np

from scjepa.errors import InputError

SPLITS = ("train", "val", "test")


def donor_split(donors, fractions=(0.7, 0.15, 0.15), seed: int = 0, *, path=None) -> np.ndarray:
    """Assign every cell a split so that each donor lands in exactly one split.

    Donors are shuffled with ``np.random.default_rng(seed)`` and dealt, in that order, each to the
    split furthest below its target number of cells. Each split gets at least
    one donor, so at least 3 donors are needed. Returns an array of "train" / "val" / "test".
    """
    donors = np.asarray(donors).astype(str)
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise InputError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}",
                         key="preprocess.split.fractions")
    uniq, inverse, counts = np.unique(donors, return_inverse=True, return_counts=True)
    if len(uniq) < 3:
        raise InputError(
            f"has {len(uniq)} donor(s) ({', '.join(uniq[:3])}); a donor-level train/val/test split needs at "
            "least 3. Map 'donor' to a column with more donors (e.g. sample) in the config.",
            path=path,
            column="donor",
        )
    order = np.random.default_rng(seed).permutation(len(uniq))
    # Deal shuffled donors, each to the split furthest below its target number of cells.
    target = fr * counts.sum()
    filled = np.zeros(3)
    assign = np.empty(len(uniq), dtype=np.int8)
    for d in order:
        s_ = int(np.argmax(target - filled))
        assign[d] = s_
        filled[s_] += counts[d]
    # Repair: every split needs a donor; take the smallest donor from the split with the most donors.
    for s in range(3):
        if not (assign == s).any():
            donors_per = np.bincount(assign, minlength=3)
            donor_split_ = int(np.argmax(donors_per))
            cands = np.flatnonzero(assign == donor_split_)
            assign[cands[np.argmin(counts[cands])]] = s
    return np.asarray(SPLITS, dtype=object)[assign[inverse]]
