"""The Snakemake side of the score scripts: the ``snakemake`` object in, one score record out.

The records themselves (and embedding reading) are :mod:`scjepa.contracts`; the rules that call these
helpers are in ``workflow/rules/tasks/``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from scjepa.contracts import guarded_record, write_score
from scjepa.errors import InputError


def setup_script_logging(snakemake) -> None:
    """The rule's log (its first ``log:`` file, or stderr without one): :func:`scjepa.logs.start_rule_log`."""
    from scjepa.logs import start_rule_log

    log = list(getattr(snakemake, "log", []) or [])
    start_rule_log(log[0] if log else None)


def smk_get(namespace, name: str, default: Any = None) -> Any:
    """``snakemake.params.<name>`` (or input/output/wildcards) with a default when absent or None."""
    try:
        value = getattr(namespace, name)
    except AttributeError:
        return default
    return default if value is None else value


def smk_identity(snakemake) -> tuple[str, str, int | None]:
    """(method, dataset, seed) of a score rule: from params, else from wildcards; seed may be None."""
    params, wc = snakemake.params, getattr(snakemake, "wildcards", None)
    method = smk_get(params, "method", smk_get(wc, "method"))
    dataset = smk_get(params, "dataset", smk_get(wc, "dataset"))
    seed = smk_get(params, "seed", smk_get(wc, "seed"))
    if method is None or dataset is None:
        raise InputError("the rule must give 'method' and 'dataset' as params or wildcards", key="params")
    return str(method), str(dataset), None if seed is None else int(seed)


def run_score_script(
    snakemake,
    task: str,
    compute: Callable[[str, str, int | None], tuple[Mapping[str, float], Mapping[str, Any]]],
    *,
    seed_in_record: bool = True,
    seed: int | None | str = "from_rule",
    dest: str | os.PathLike | None = None,
) -> dict:
    """The body every score script shares: identity, logging, compute, one record, atomic write.

    ``compute(method, dataset, seed) -> (metrics, config)``; n/a and failures as
    :func:`scjepa.contracts.guarded_record`, ``params.record_failures`` deciding whether an error
    becomes a "failed" record (the job succeeds) or fails the job (nothing half-written: nothing was written).
    ``seed``/``dest`` override the rule's seed and ``output.score`` (several runs in one job).
    """
    setup_script_logging(snakemake)
    method, dataset, rule_seed = smk_identity(snakemake)
    seed = rule_seed if seed == "from_rule" else seed
    record = guarded_record(task, method, dataset, lambda: compute(method, dataset, seed),
                            seed=seed if seed_in_record else None,
                            record_failures=bool(smk_get(snakemake.params, "record_failures", False)))
    write_score(record, dest if dest is not None else snakemake.output.score)
    return record


def run_score_seeds(
    snakemake,
    task: str,
    compute: Callable[..., tuple[Mapping[str, float], Mapping[str, Any]]],
    *,
    per_seed_outputs: Mapping[str, str] | None = None,
) -> list[dict]:
    """:func:`run_score_script` once per seed of a job: ``params.seeds`` aligned with ``output.scores``.

    Without ``params.seeds`` it is one run for the rule's own seed writing ``output.score``.
    ``per_seed_outputs`` maps an extra output's one-seed name to its list name (e.g.
    ``{"history": "histories"}``); ``compute(method, dataset, seed, **paths)`` then receives, per run,
    that output's path for this seed under the one-seed name (None where the rule has no such output).
    Lists of different lengths are a ValueError naming them, before any run. Returns the records.
    """
    extra = dict(per_seed_outputs or {})
    seeds = smk_get(snakemake.params, "seeds")
    if seeds is None:
        paths = {one: smk_get(snakemake.output, one) for one in extra}
        return [run_score_script(snakemake, task, lambda m, d, s: compute(m, d, s, **paths))]
    dests = list(snakemake.output.scores)
    lists = {one: list(smk_get(snakemake.output, many) or [None] * len(dests)) for one, many in extra.items()}
    lengths = {"params.seeds": len(seeds), "output.scores": len(dests),
               **{f"output.{extra[one]}": len(v) for one, v in lists.items()}}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"a run per seed needs lists of one length, got {lengths}; align them")
    records = []
    for i, (seed, dest) in enumerate(zip(seeds, dests)):
        paths = {one: v[i] for one, v in lists.items()}
        records.append(run_score_script(snakemake, task, lambda m, d, s: compute(m, d, s, **paths),
                                        seed=int(seed), dest=dest))
    return records
