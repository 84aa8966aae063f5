# Config access, target builders and input functions. No rules here.
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

WORKFLOW_DIR = Path(workflow.basedir)
sys.path.insert(0, str(WORKFLOW_DIR / "src"))  # the library, also when not pip-installed

import scjepa.config as scjepa_config
from scjepa.errors import InputError

try:
    _checked = scjepa_config.validate(config)
except InputError as _exc:
    raise WorkflowError(f"Configuration error: {_exc}") from None
config.clear()
config.update(_checked)

DATASETS = config["datasets"]
CORPUS = config["corpus"]
METHODS = list(config["methods"])
NEVER = "(?!x)x"  # a regex that matches nothing: a wildcard constraint for an empty set


def names_regex(names):
    """Wildcard constraint matching exactly the given names."""
    names = list(names)
    return "|".join(re.escape(n) for n in names) if names else NEVER


def datasets_with_role(role):
    return [d for d, e in DATASETS.items() if role in e["roles"]]


def datasets_with_source(source):
    return [d for d, e in DATASETS.items() if e["source"] == source]


def method_entry(method):
    return scjepa_config.method_entry(config, method)


def methods_of_family(family):
    return [m for m in METHODS if method_entry(m)["family"] == family]


def methods_serving(task):
    return [m for m in METHODS if task in method_entry(m)["serves"]]


def method_rule_files():
    """Every rule file in workflow/rules/methods/: one file per method (family)."""
    return sorted(str(p.relative_to(WORKFLOW_DIR)) for p in (WORKFLOW_DIR / "workflow/rules/methods").glob("*.smk"))


def check_methods_have_rules():
    """An unknown method name fails before any job runs (called after the method files are included)."""
    for m in METHODS:
        fam = method_entry(m)["family"]
        if not (hasattr(rules, f"embed_{fam}") or hasattr(rules, f"embed_{m}")):
            raise WorkflowError(
                f"Configuration error: key 'methods': method '{m}' (family '{fam}') has no rule "
                f"'embed_{fam}' or 'embed_{m}'. Add workflow/rules/methods/{m}.smk or fix the name "
                f"(known families: {', '.join(sorted(r.name[6:] for r in workflow.rules if r.name.startswith('embed_')))})."
            )


# ---- parameters passed to scripts ---------------------------------------------------------------


def dataset_spec(wildcards):
    return {"name": wildcards.dataset, **DATASETS[wildcards.dataset]}


def training_hparams(method):
    """Training-engine defaults overlaid with the method's own hyper-parameters (+ family, name)."""
    entry = method_entry(method)
    hp = dict(config["training"]) if entry["family"] in scjepa_config.TORCH_FAMILIES else {}
    hp.update(entry["hparams"])
    hp["family"] = entry["family"]
    return hp


def method_gpu(method):
    return int(method_entry(method)["gpu"])


# ---- resources (grow with attempt: an out-of-memory job is retried bigger) ------------------------


def mem(base_mb):
    def _mem(wildcards, attempt):
        return int(base_mb * (1.5 ** (attempt - 1)))

    return _mem


def runtime(base_min):
    def _runtime(wildcards, attempt):
        return int(base_min * attempt)

    return _runtime


def gpu_of_method(wildcards):
    return method_gpu(wildcards.method)


# ---- paths ----------------------------------------------------------------------------------------


def raw_path(dataset):
    return f"resources/datasets/{dataset}/raw.h5ad"


def processed_path(dataset):
    return f"results/data/{dataset}/processed.h5ad"


def embedding_path(method, dataset):
    return f"results/embeddings/{method}/{dataset}.h5ad"


def model_dir(method):
    return f"results/models/{method}"


def gene_space_input(wildcards):
    gs = config["gene_space"]
    if gs.get("file"):
        return gs["file"]
    return raw_path(gs.get("from_dataset") or CORPUS)


def processed_input(wildcards):
    return processed_path(wildcards.dataset)


def embedding_input(wildcards):
    return embedding_path(wildcards.method, wildcards.dataset)


def model_input(wildcards):
    return model_dir(wildcards.method)


def spatial_reference_input(wildcards):
    ref = DATASETS[wildcards.dataset].get("reference")
    return [embedding_path(wildcards.method, ref)] if ref else []


def curve_inputs(wildcards=None):
    return [model_dir(m) for m in METHODS if method_entry(m)["family"] in scjepa_config.TORCH_FAMILIES]


# ---- score targets --------------------------------------------------------------------------------


def eval_datasets(task):
    return sorted({d for d, e in DATASETS.items() for r in e["roles"] if task in scjepa_config.ROLE_TASKS.get(r, ())})


def score_paths(task, methods=None, datasets=None):
    methods = methods_serving(task) if methods is None else methods
    datasets = eval_datasets(task) if datasets is None else datasets
    out = []
    for m in methods:
        for d in datasets:
            if task == "finetune":
                out += [f"results/scores/finetune/{m}/{d}/{s}.json" for s in config["tasks"]["finetune"]["seeds"]]
            elif task == "integration":
                out += [f"results/scores/integration/{m}/{d}/{r}.json" for r in range(config["tasks"]["integration"]["runs"])]
            else:
                out.append(f"results/scores/{task}/{m}/{d}.json")
    return out


def zero_shot_scores(wildcards=None):
    return score_paths("zero_shot")


def finetune_scores(wildcards=None):
    return score_paths("finetune")


def integration_scores(wildcards=None):
    return score_paths("integration")


def spatial_scores(wildcards=None):
    return score_paths("spatial")


def bridge_scores(wildcards=None):
    return score_paths("bridge")


def report_params():
    """What the table/figure scripts need to lay out rows, columns and n/a cells."""
    return {
        "methods": METHODS,
        "labels": {m: method_entry(m)["label"] for m in METHODS},
        "serves": {m: method_entry(m)["serves"] for m in METHODS},
        "families": {m: method_entry(m)["family"] for m in METHODS},
        "ablation_of": {m: method_entry(m)["ablation_of"] for m in METHODS},
        "datasets": {r: datasets_with_role(r) for r in scjepa_config.ROLE_TASKS},
        "finetune_seeds": config["tasks"]["finetune"]["seeds"],
        "integration_runs": config["tasks"]["integration"]["runs"],
        "formats": config["report"]["formats"],
        "dpi": config["report"]["dpi"],
    }


def all_targets():
    return [
        "results/tables/.done",
        "results/figures/.done",
    ]


def method_hparams(wildcards):
    return training_hparams(wildcards.method)
