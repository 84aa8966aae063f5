"""One colour per method, the same in every figure (Figs. 2-5, the summary and the cost figure).

Colours belong to the method, not to its position in a figure: a figure that shows a subset of the methods
(Fig. 3 has no scVI, Fig. 4 only the torch methods) colours scJEPA the way every other figure does. The
built-in methods have fixed colours from the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies); controls are greys (a reference line, not a competitor). A method this module does not know
(an ablation variant, a user's rule file) takes the next unused colour of :data:`EXTRA`, in the order the
figure lists it, so the known methods never change colour when a user adds one.

Figures call :func:`method_colors`; the bridge figures can adopt it the same way.
"""

from __future__ import annotations

from typing import Mapping, Sequence

#: fixed colours of the built-in methods (Okabe-Ito, darkened yellow so it reads on white)
METHOD_COLORS: dict[str, str] = {
    "scjepa": "#D55E00",  # vermillion: the paper's method stands out
    "pca": "#56B4E9",  # sky blue
    "mae": "#E69F00",  # orange
    "barlow_twins": "#009E73",  # bluish green
    "supervised": "#0072B2",  # blue
    "scvi": "#CC79A7",  # reddish purple
    "harmony": "#A68F00",  # dark yellow
}
#: controls: greys, darker for the positive control (a ceiling)
CONTROL_COLORS: dict[str, str] = {"random": "#9E9E9E", "unintegrated": "#7A7A7A", "labels": "#3A3A3A"}
CONTROL_KIND_COLORS: dict[str, str] = {"negative": "#9E9E9E", "positive": "#3A3A3A"}
#: colours for methods not listed above, handed out in order (distinct from the fixed ones)
EXTRA: tuple[str, ...] = ("#882255", "#44AA99", "#332288", "#DDCC77", "#117733", "#AA4499", "#88CCEE",
                          "#999933", "#661100", "#6699CC", "#CC6677", "#4B0092")


def method_colors(methods: Sequence[str], controls: Mapping[str, str] | None = None) -> dict[str, str]:
    """Method id -> colour (hex). ``controls``: method -> "negative" | "positive" for controls this module
    does not name (they get the grey of their kind)."""
    out: dict[str, str] = {}
    used = set()
    for m in methods:
        if m in METHOD_COLORS:
            out[m] = METHOD_COLORS[m]
        elif m in CONTROL_COLORS:
            out[m] = CONTROL_COLORS[m]
        elif controls and m in controls:
            out[m] = CONTROL_KIND_COLORS.get(controls[m], "#7A7A7A")
        used.add(out.get(m))
    extra = iter(c for c in EXTRA if c not in used)
    for m in methods:
        if m not in out:
            out[m] = next(extra, "#555555")
    return out
