# Report rules: tables, figures.
