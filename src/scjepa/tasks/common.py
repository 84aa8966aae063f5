"""What every score rule's entry point shares: one record per run, n/a and failures included, atomic writes.

The rule's files and params arrive as a :class:`scjepa.rule.Rule` (``scjepa.rule`` is the one reader of
Snakemake's object); the records are :mod:`scjepa.contracts`. The entry points are :mod:`scjepa.tasks.entries`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from scjepa.contracts import guarded_record, write_score

Compute = Callable[..., tuple[Mapping[str, float], Mapping[str, Any]]]


def score_one(rule, task: str, compute: Compute, *, seed: int | None = None, seed_in_record: bool = True,
              dest: str | None = None) -> dict:
    """``compute(method, dataset, seed) -> (metrics, config)`` once; its record (``ok``, ``n/a`` on a
    NotApplicableError, an error fails the job unless ``params.record_failures``) written to ``dest`` or
    ``output.score``."""
    method, dataset = rule.method_dataset()
    record = guarded_record(task, method, dataset, lambda: compute(method, dataset, seed),
                            seed=seed if seed_in_record else None,
                            record_failures=bool(rule.params.get("record_failures", False)))
    write_score(record, dest if dest is not None else rule.output["score"])
    return record


def score_replicates(rule, task: str, compute: Compute, *, per_seed_outputs: Mapping[str, str] | None = None
                     ) -> list[dict]:
    """:func:`score_one` per replicate of a job: ``params.seeds`` aligned with ``output.scores``.

    ``per_seed_outputs`` maps an extra output's one-seed name to its list name (e.g. ``{"history":
    "histories"}``); ``compute(method, dataset, seed, **paths)`` then receives that output's path for the
    run. Lists of different lengths are a ValueError naming them, before any run.
    """
    extra = dict(per_seed_outputs or {})
    seeds = list(rule.params["seeds"])
    dests = list(rule.output["scores"])
    lists = {one: list(rule.output.get(many) or [None] * len(dests)) for one, many in extra.items()}
    lengths = {"params.seeds": len(seeds), "output.scores": len(dests),
               **{f"output.{extra[one]}": len(v) for one, v in lists.items()}}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"a run per seed needs lists of one length, got {lengths}; align them")
    records = []
    for i, (seed, dest) in enumerate(zip(seeds, dests)):
        paths = {one: v[i] for one, v in lists.items()}
        records.append(score_one(rule, task, lambda m, d, s, paths=paths: compute(m, d, s, **paths), seed=int(seed),
                                 dest=dest))
    return records
