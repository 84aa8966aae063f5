"""scJEPA benchmark library: data, methods, evaluation tasks and reporting.

The Snakemake workflow in ``workflow/`` orchestrates this library; everything here is usable
(and tested) without Snakemake.
"""

__version__ = "0.1.0"
