"""The task registry: one declaration per evaluation task, the only list of tasks (a declaration module
with no imports of its own, below `config` and `tasks/`).

A :class:`Task` says which dataset roles it runs on, which method kinds it serves by default (and which
it can serve at all), how many score records it writes per (method, dataset), and the tables and
figures that show it. The workflow derives everything else from it: the schema's task names, the score
paths a table reads, one ``table_*`` rule per :class:`Table`, and the final targets.

Built-in tasks are declared at the bottom of this module. A workflow adds one with
``workflow/rules/tasks/<name>.smk``: a :func:`register` call with its declaration (and the JSON schema
of its ``tasks.<name>`` settings), its scoring rule, and a caption file (docs/ARCHITECTURE.md, "Adding a
task").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

#: what a method family can do; it decides the tasks a method serves by default
ENCODER = "encoder"  # a pretrained torch encoder: embeds any dataset, can be fine-tuned
EMBEDDING = "embedding"  # fitted once on the corpus, embeds any dataset (PCA, a user's rule file)
PER_DATASET = "per_dataset"  # fitted on each dataset it embeds (scVI, Harmony)
CONTROL = "control"  # a floor or ceiling (scjepa.methods.controls): takes part only where its config says
KINDS = (ENCODER, EMBEDDING, PER_DATASET, CONTROL)
FAMILY_KINDS = {"scjepa": ENCODER, "mae": ENCODER, "barlow_twins": ENCODER, "supervised": ENCODER,
                "pca": EMBEDDING, "scvi": PER_DATASET, "harmony": PER_DATASET, "control": CONTROL}


def family_kind(family: str) -> str:
    """A family's kind; a family this library does not know (a user's rule file) embeds like PCA."""
    return FAMILY_KINDS.get(family, EMBEDDING)


@dataclass(frozen=True)
class Table:
    """One results table: ``results/tables/<name>.{md,csv,tex}``, written by rule ``rule``.

    Its columns are the datasets with one of ``roles``; its cells come from the records of the tasks in
    ``reads``; its rows are the main methods or (``rows="ablation"``) the ablation variants. ``renderer``
    is a table function of :mod:`scjepa.report.tables` (``"generic"``: one ``metric`` per dataset).
    """

    name: str
    rule: str
    renderer: str
    roles: tuple[str, ...]
    reads: tuple[str, ...]
    caption: str  # caption file under workflow/report/
    rows: str = "main"
    replicates_of: str | None = None  # the task whose seeds/runs the table expects
    probe: bool = False  # linear-probe columns when tasks.zero_shot.linear_probe is on
    hierarchy: bool = False  # hierarchy-corrected F1 columns when tasks.zero_shot.hierarchy.enabled is on
    metric: str | None = None  # generic tables
    higher_is_better: bool = True
    label: str = ""  # generic tables: the metric's label and the table's caption line


@dataclass(frozen=True)
class Figure:
    """A figure drawn by a hand-written rule: ``results/figures/<name>.<fmt>``; ``{dataset}`` in the name
    makes one per dataset with one of ``roles``."""

    name: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    """An evaluation task. ``replicates``: the key of ``tasks.<name>`` that lists the seeds (a list) or
    counts the runs (an int) of its records, one file each; ``None``: one record per (method, dataset)."""

    name: str
    roles: tuple[str, ...]
    serves: tuple[str, ...]  # method kinds that take part by default
    only: tuple[str, ...] | None = None  # kinds that can take part at all (None: any)
    replicates: str | None = None
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)  # JSON schema of tasks.<name> (user tasks)
    description: str = ""

    def replicate_ids(self, config: Mapping) -> list[int] | None:
        if self.replicates is None:
            return None
        value = config["tasks"][self.name][self.replicates]
        return list(range(value)) if isinstance(value, int) else [int(v) for v in value]


REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` (a name may be registered once; the same declaration again is a no-op)."""
    if task.name in REGISTRY and REGISTRY[task.name] != task:
        raise ValueError(f"task '{task.name}' is already registered with another declaration")
    for kind in task.serves + (task.only or ()):
        if kind not in KINDS:
            raise ValueError(f"task '{task.name}': unknown method kind '{kind}' (one of {', '.join(KINDS)})")
    REGISTRY[task.name] = task
    return task


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Task:
    return REGISTRY[name]


def default_serves(family: str) -> list[str]:
    kind = family_kind(family)
    return [t.name for t in REGISTRY.values() if kind in t.serves]


def can_serve(family: str, task: str) -> bool:
    only = REGISTRY[task].only
    return only is None or family_kind(family) in only


def tables() -> list[Table]:
    return [tab for t in REGISTRY.values() for tab in t.tables]


def tasks_of_role(role: str) -> list[str]:
    return [t.name for t in REGISTRY.values() if role in t.roles]


# ---- the built-in tasks ----------------------------------------------------------------------------

_ALL_BUT_PER_DATASET = (ENCODER, EMBEDDING)

register(Task(
    "zero_shot", roles=("in_distribution", "out_of_distribution"), serves=_ALL_BUT_PER_DATASET,
    description="Frozen-embedding annotation: kNN and a linear probe, reference split -> query split.",
    tables=(
        Table("table1_in_distribution", "table_in_distribution", "table1_in_distribution", ("in_distribution",),
              ("zero_shot", "finetune"), "table1.rst", replicates_of="finetune", probe=True, hierarchy=True),
        Table("table2_out_of_distribution", "table_out_of_distribution", "table2_out_of_distribution",
              ("out_of_distribution",), ("zero_shot", "finetune"), "table2.rst", replicates_of="finetune",
              probe=True, hierarchy=True),
        Table("table4_ablation", "table_ablation", "table4_ablation", ("in_distribution",),
              ("zero_shot", "finetune"), "table4.rst", rows="ablation", replicates_of="finetune", probe=True),
    ),
))
register(Task(
    "finetune", roles=("in_distribution", "out_of_distribution", "spatial"), serves=(ENCODER,), only=(ENCODER,),
    replicates="seeds",
    description="Pretrained encoder + linear head, full fine-tuning, model selection on val; every seed.",
))
register(Task(
    "integration", roles=("integration",), serves=(ENCODER, EMBEDDING, PER_DATASET), replicates="runs",
    description="scib-metrics bio-conservation, batch correction and total on random subsamples.",
    tables=(Table("table_integration", "table_integration", "table_integration", ("integration",),
                  ("integration",), "table_integration.rst", replicates_of="integration"),),
    figures=(Figure("fig2_integration", ("integration",)),),
))
register(Task(
    "spatial", roles=("spatial",), serves=_ALL_BUT_PER_DATASET,
    description="kNN annotation within the tissue and cross-platform transfer from a dissociated reference.",
    tables=(Table("table3_spatial", "table_spatial", "table3_spatial", ("spatial",), ("spatial", "finetune"),
                  "table3.rst", replicates_of="finetune", hierarchy=True),),
    figures=(Figure("fig3_spatial_{dataset}", ("spatial",)),),
))
register(Task(
    "bridge", roles=("timecourse", "perturbation"), serves=KINDS,
    description="Schrödinger bridges in each latent: held-out time points, fates, perturbation transport.",
    tables=(
        Table("table_bridge_interpolation", "table_bridge_interpolation", "table_bridge_interpolation",
              ("timecourse",), ("bridge",), "table_bridge.rst", higher_is_better=False,
              label="Held-out time points: absolute W1 in the reference space, methods and baselines"),
        Table("table_bridge_fate", "table_bridge_fate", "table_bridge_fate", ("timecourse",), ("bridge",),
              "table_bridge.rst", label="Fate prediction from chained couplings: accuracy, Brier, log-loss vs chance"),
        Table("table_bridge_perturbation", "table_bridge_perturbation", "table_bridge_perturbation", ("perturbation",),
              ("bridge",), "table_bridge.rst", higher_is_better=False,
              label="Control to perturbed transport: CellOT's held-out readouts with identity and mean-shift rows"),
    ),
    figures=(Figure("fig5_bridge_{dataset}", ("timecourse",)),),
))
