"""The one reader of Snakemake's ``snakemake`` object.

A thin script in ``workflow/scripts/`` is ``run(snakemake, entry)``: this module turns the object into a
plain :class:`Rule` (named inputs, outputs, params and wildcards as dicts; the log; threads), opens the
rule's log and calls the library's ``entry(rule)``. Library entry points therefore never see Snakemake
and can be called from tests or notebooks with a ``Rule`` built by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Rule:
    """A rule's files and parameters. Values are ``str`` (one file) or ``list[str]`` (several); params as
    the rule gives them (the workflow passes every value from the validated config: no defaults here)."""

    name: str = ""
    input: Mapping[str, Any] = field(default_factory=dict)
    output: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    wildcards: Mapping[str, str] = field(default_factory=dict)
    log: str | None = None
    threads: int = 1
    resources: Mapping[str, Any] = field(default_factory=dict)

    def method_dataset(self) -> tuple[str, str]:
        """(method, dataset) of a per-method, per-dataset rule: from its wildcards or params."""
        method = self.params.get("method", self.wildcards.get("method"))
        dataset = self.params.get("dataset", self.wildcards.get("dataset"))
        if method is None or dataset is None:
            from scjepa.errors import InputError

            raise InputError(f"rule {self.name or '?'} must give 'method' and 'dataset' as wildcards or params",
                             key="params")
        return str(method), str(dataset)


def as_dict(namespace) -> dict[str, Any]:
    """A Snakemake namespace (input, output, params, wildcards: a Namedlist) as a dict of its named entries."""
    if namespace is None:
        return {}
    items = namespace.items() if hasattr(namespace, "items") else vars(namespace).items()
    out = {}
    for name, value in items:
        out[name] = value if isinstance(value, (str, bytes, int, float, bool, dict)) or value is None else (
            list(value) if isinstance(value, (list, tuple)) else value)
    return out


def from_snakemake(smk) -> Rule:
    """The :class:`Rule` of a running Snakemake script (``snakemake`` in the script's globals)."""
    log = list(getattr(smk, "log", []) or [])
    return Rule(
        name=str(getattr(smk, "rule", "") or ""),
        input=as_dict(smk.input),
        output=as_dict(smk.output),
        params=as_dict(smk.params),
        wildcards=dict(as_dict(getattr(smk, "wildcards", None))),
        log=str(log[0]) if log else None,
        threads=int(getattr(smk, "threads", 1) or 1),
        resources=as_dict(getattr(smk, "resources", None)),
    )


def run(smk, entry: Callable[[Rule], Any]) -> Any:
    """Run ``entry(rule)`` for the script's rule under its log (errors logged with their traceback)."""
    from scjepa.logs import rule_log

    rule = from_snakemake(smk)
    with rule_log(rule.log):
        return entry(rule)
