"""Configuration: schema validation (with defaults) and the checks a schema cannot express.

The workflow calls :func:`check` right after Snakemake's own schema validation, so every error
below surfaces before any job runs, naming the offending key.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from pathlib import Path
from typing import Any

import yaml

from scjepa.errors import InputError

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"  # package data: found installed too

from scjepa import task_registry as tasks_registry

#: families whose training rule reads the ``training:`` section (torch encoders)
TORCH_FAMILIES = tuple(f for f, k in tasks_registry.FAMILY_KINDS.items() if k == tasks_registry.ENCODER)
SOURCE_KEYS = {
    "synthetic": ("synthetic",),
    "url": ("url", "sha256"),
    "census": ("census_dataset_id",),
    "census_query": (),
    "local": ("path",),
    "bundled": ("name",),
}
#: dataset role -> the standard columns it must map (``donor`` only where a donor split is used)
ROLE_COLUMNS = {
    "pretrain": ("cell_type", "donor"),
    "in_distribution": ("cell_type", "donor"),
    "out_of_distribution": ("cell_type", "donor"),
    "integration": ("cell_type", "batch"),
    "spatial": ("cell_type", "donor", "x", "y"),
    "timecourse": ("time",),
    "perturbation": ("cell_type", "condition"),
}
#: roles whose tasks read the donor-level train/val/test split (>= 3 donors): the store trains on
#: train/val, annotation scores train -> test. Integration and the bridge use every cell.
SPLIT_ROLES = ("pretrain", "in_distribution", "out_of_distribution", "spatial")


def load_schema(extra_tasks=()) -> dict:
    """The config schema, with the task names it accepts taken from the task registry.

    ``extra_tasks``: tasks a workflow declares in its own rule files (``workflow/rules/tasks/<name>.smk``),
    registered only once those files are read; their ``tasks.<name>`` settings are checked then.
    """
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    names = list(dict.fromkeys([*tasks_registry.names(), *extra_tasks]))
    schema["definitions"]["method"]["properties"]["serves"]["items"]["enum"] = names
    props = schema["properties"]["tasks"]["properties"]
    for name in names:
        if name not in props:
            props[name] = {"type": "object", "default": {},
                           "description": f"Settings of the task '{name}' (its declaration's schema)."}
    return schema


def _set_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Fill ``default`` values recursively (what Snakemake's ``validate(set_default=True)`` does)."""
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        schema = {**root["definitions"][ref], **{k: v for k, v in schema.items() if k != "$ref"}}
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _set_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _set_defaults(value, extra, root)


def validate(config: dict, extra_tasks=()) -> dict:
    """Schema-validate ``config`` (a copy, defaults filled), then :func:`check` it."""
    import jsonschema

    schema = load_schema(extra_tasks)
    cfg = copy.deepcopy(config)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        key = ".".join(map(str, e.absolute_path)) or "<top level>"
        raise InputError(f"invalid config: {e.message}", key=key)
    _set_defaults(cfg, schema, schema)
    check(cfg)
    return cfg


def method_entry(config: dict, method: str) -> dict:
    """The method's params with defaults: family, serves, hparams, label, ablation_of, gpu (a sweep
    variant's entry: :func:`sweep_variants`)."""
    sweeps = config.get("sweeps") or {}
    if any(method.startswith(f"{name}_p") for name in sweeps):  # only a sweep's name can be a variant's prefix
        variants = sweep_variants(config)
        if method in variants:
            return variants[method]
    entry = dict(config.get("method_params", {}).get(method) or {"family": method})
    entry.setdefault("hparams", {})
    base = entry.get("ablation_of")
    if base and base != method and base in config.get("method_params", {}):
        # an ablation is its base method with its own changes: the base's hparams (e.g. the swept λ and γ)
        # hold unless the ablation overrides them
        entry["hparams"] = {**(config["method_params"][base].get("hparams") or {}), **entry["hparams"]}
    entry.setdefault("label", None)
    entry.setdefault("ablation_of", None)
    entry.setdefault("gpu", 0)
    entry.setdefault("control", None)
    entry.setdefault("serves", tasks_registry.default_serves(entry["family"]))
    if entry["label"] is None:
        entry["label"] = method
    return entry


def _format_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def sweep_points(sweep: dict) -> list[dict]:
    """The grid of one ``sweeps`` entry as a list of {hparam: value}, in a fixed order (the product of the
    value lists, first key slowest)."""
    keys = list(sweep["grid"])
    return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep["grid"][k] for k in keys))]


def sweep_variants(config: dict) -> dict[str, dict]:
    """Every method variant the ``sweeps`` section asks for, name -> method entry.

    A variant is named ``<sweep>_p<i>_s<seed>`` (``i`` the grid point's index, two digits): the base method's
    entry with the sweep's shared ``hparams`` and then the grid point over its hparams, ``seed`` its pretraining seed, and ``sweep``/``point``/``base``
    saying where it comes from. It is not an ablation, serves no evaluation task and is never in ``methods``.
    """
    out: dict[str, dict] = {}
    for name, sweep in (config.get("sweeps") or {}).items():
        base = sweep["method"]
        base_entry = dict(config.get("method_params", {}).get(base) or {"family": base})
        seeds = sweep.get("seeds") or [int(config.get("seed", 0))]
        for i, point in enumerate(sweep_points(sweep)):
            label = ", ".join(f"{k}={_format_value(v)}" for k, v in point.items())
            for seed in seeds:
                hparams = {**base_entry.get("hparams", {}), **sweep.get("hparams", {}), **point}
                entry = {**base_entry, "hparams": hparams, "label": label,
                         "ablation_of": None, "control": None, "serves": [], "description": "",
                         "sweep": name, "point": dict(point), "point_index": i, "seed": int(seed), "base": base}
                entry.setdefault("gpu", 0)
                out[f"{name}_p{i:02d}_s{int(seed)}"] = entry
    return out


def _check_sweeps(config: dict) -> None:
    methods = set(config.get("method_params", {})) | set(config["methods"])
    for name, sweep in (config.get("sweeps") or {}).items():
        key = f"sweeps.{name}"
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise InputError("a sweep name is letters, digits and '_' (it names method variants and files)", key=key)
        if sweep["method"] not in methods:
            raise InputError(f"'{sweep['method']}' is not a method (a key of method_params or in methods)",
                             key=f"{key}.method")
        if config.get("method_params", {}).get(sweep["method"], {}).get("family") == "control":
            raise InputError("a control is not tuned", key=f"{key}.method")
        dataset = sweep["score"].get("dataset") or config["corpus"]
        ds = config["datasets"].get(dataset)
        if ds is None:
            raise InputError(f"'{dataset}' is not a dataset", key=f"{key}.score.dataset")
        if not set(ds["roles"]) & set(SPLIT_ROLES):
            raise InputError(f"'{dataset}' has no train/val/test split (roles {ds['roles']}; one of {list(SPLIT_ROLES)} "
                             "is needed)", key=f"{key}.score.dataset")
        if not (ds.get("columns") or {}).get("cell_type"):
            raise InputError(f"'{dataset}' has no cell_type column to score", key=f"{key}.score.dataset")
    clash = set(sweep_variants(config)) & (set(config["methods"]) | set(config.get("method_params", {})))
    if clash:
        raise InputError(f"sweep variant name(s) {sorted(clash)} are also method names; rename the sweep", key="sweeps")


def check(config: dict) -> None:
    """Cross-key checks: the corpus exists and pretrains, sources have their keys, roles their columns."""
    datasets = config["datasets"]
    corpus = config["corpus"]
    if corpus not in datasets:
        raise InputError(f"corpus '{corpus}' is not a dataset in 'datasets' ({', '.join(datasets)})", key="corpus")
    if "pretrain" not in datasets[corpus]["roles"]:
        raise InputError(f"corpus '{corpus}' must have the role 'pretrain'", key=f"datasets.{corpus}.roles")
    gs = config.get("gene_space", {})
    if gs.get("from_dataset") and gs["from_dataset"] not in datasets:
        raise InputError(f"'{gs['from_dataset']}' is not a dataset", key="gene_space.from_dataset")
    for name, ds in datasets.items():
        if "/" in name or name.startswith("."):
            raise InputError("dataset names may not contain '/' or start with '.'", key=f"datasets.{name}")
        for k in SOURCE_KEYS[ds["source"]]:
            if k == "census_dataset_id" and ds.get("census_dataset_ids"):
                if ds.get(k):
                    raise InputError("give census_dataset_id or census_dataset_ids, not both",
                                     key=f"datasets.{name}.census_dataset_ids")
                continue
            if ds.get(k) in (None, ""):
                raise InputError(f"source '{ds['source']}' needs '{k}'", key=f"datasets.{name}.{k}")
        cols = dict(ds.get("columns", {}))
        if cols.get("donor") and not cols.get("batch"):
            cols["batch"] = cols["donor"]  # preprocessing makes donors the batches when none is mapped
        for role in ds["roles"]:
            for col in ROLE_COLUMNS[role]:
                if not cols.get(col):
                    raise InputError(f"role '{role}' needs the column mapping '{col}'",
                                     key=f"datasets.{name}.columns.{col}")
        ref = ds.get("reference")
        if ref is not None and ref not in datasets:
            raise InputError(f"reference '{ref}' is not a dataset", key=f"datasets.{name}.reference")
        split_from = (ds.get("split_from") or {}).get("dataset")
        if split_from is not None:
            if split_from not in datasets or split_from == name:
                raise InputError(f"'{split_from}' is not another dataset", key=f"datasets.{name}.split_from.dataset")
            if datasets[split_from].get("split_from"):
                raise InputError(f"'{split_from}' takes its own split from another dataset; name that one",
                                 key=f"datasets.{name}.split_from.dataset")
    seen = set()
    for m in config["methods"]:
        if m in seen:
            raise InputError(f"method '{m}' is listed twice", key="methods")
        seen.add(m)
    for m, entry in config.get("method_params", {}).items():
        if entry.get("ablation_of") and entry["ablation_of"] not in config.get("method_params", {}):
            raise InputError(f"ablation_of '{entry['ablation_of']}' is not a method",
                             key=f"method_params.{m}.ablation_of")
        if entry.get("family") == "control" and not entry.get("control"):
            raise InputError("a control says whether it is a floor or a ceiling: control: negative or positive",
                             key=f"method_params.{m}.control")
        if entry.get("family") == "control" and not entry.get("serves"):
            raise InputError("a control lists the tasks it takes part in (serves: [...])", key=f"method_params.{m}.serves")
        for task in entry.get("serves", []):
            if task in tasks_registry.REGISTRY and not tasks_registry.can_serve(entry["family"], task):
                kind = tasks_registry.family_kind(entry["family"])
                needs = " or ".join(tasks_registry.get(task).only or ())
                raise InputError(f"family '{entry['family']}' ({kind}) cannot serve '{task}', which needs a method "
                                 f"of kind {needs} (e.g. no encoder to fine-tune)", key=f"method_params.{m}.serves")

    _check_sweeps(config)

def register_task_settings(config: dict, task) -> None:
    """Check and default ``config["tasks"][task.name]`` against a user task's settings schema (a JSON schema of
    an object), once its rule file registered it."""
    import jsonschema

    section = config.setdefault("tasks", {}).setdefault(task.name, {})
    schema = {"type": "object", "additionalProperties": False, "properties": {}, **dict(task.settings)}
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(section), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        key = ".".join(["tasks", task.name, *map(str, e.absolute_path)])
        raise InputError(f"invalid config: {e.message}", key=key)
    _set_defaults(section, schema, schema)


def check_tasks_registered(config: dict) -> None:
    """Every ``tasks.<name>`` section and every ``serves`` entry names a registered task (a typo is an error)."""
    known = tasks_registry.names()
    for name in config.get("tasks", {}):
        if name not in known:
            raise InputError(f"unknown task '{name}' (known: {', '.join(known)})", key=f"tasks.{name}")
    for m, entry in config.get("method_params", {}).items():
        for task in entry.get("serves", []) or []:
            if task not in known:
                raise InputError(f"unknown task '{task}' (known: {', '.join(known)})", key=f"method_params.{m}.serves")


def schema_markdown() -> str:
    """The reference table of every config key (config/README.md is generated from this)."""
    schema = load_schema()
    defs = schema.get("definitions", {})
    rows: list[tuple[str, str, str, str]] = []

    def resolve(node):
        if "$ref" in node:
            return {**defs[node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def walk(node, prefix):
        node = resolve(node)
        for key, sub in node.get("properties", {}).items():
            sub = resolve(sub)
            name = f"{prefix}{key}"
            typ = sub.get("type", "object")
            typ = " or ".join(typ) if isinstance(typ, list) else typ
            if "enum" in sub:
                typ += ": " + " \\| ".join(map(str, sub["enum"]))
            default = "*required*" if key in node.get("required", []) else (
                "`" + json.dumps(sub["default"]) + "`" if "default" in sub else "")
            rows.append((name, typ, default, " ".join(str(sub.get("description", "")).split())))
            if sub.get("properties"):
                walk(sub, name + ".")
            extra = sub.get("additionalProperties")
            if isinstance(extra, dict):
                walk(extra, name + ".<name>.")

    walk(schema, "")
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} | {desc} |" for k, t, d, desc in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m scjepa.config  -> the key reference in Markdown
    print(schema_markdown(), end="")
