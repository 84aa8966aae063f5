"""Rules table_*: one paper-style table (Markdown, CSV, LaTeX) from score records.

Every (method, dataset) the table expects is shown: a record with status "n/a"/"failed" renders as such, an
``na`` entry renders ``n/a``, and a record file that is absent (the job failed under ``--keep-going``)
renders ``failed``. The rules are generated from the task registry (workflow/rules/report.smk); their params
are documented in ``scjepa.report.render.render_rule``.
"""

from scjepa.report.render import table_rule
from scjepa.rule import run

run(snakemake, table_rule)  # noqa: F821
