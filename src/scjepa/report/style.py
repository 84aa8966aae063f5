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
EXTRA: tuple[str, ...] = ("#882255", "#332288", "#999933", "#6699CC", "#117733", "#AA4499", "#44AA99",
                          "#DDCC77", "#661100", "#88CCEE", "#CC6677", "#4B0092")


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


def _text_polygon(t, renderer, shrink: float):
    """The drawn rectangle of a text artist, rotated with it (4 corners, display pixels), shrunk by ``shrink``
    on each side. An axis-aligned box of a 45° tick label covers its neighbours' boxes although the glyphs do
    not touch: the rotated rectangle is what the reader sees."""
    import math

    bb = t.get_window_extent(renderer)
    if not (bb.width > 0 and bb.height > 0):  # also drops NaN extents
        return None
    rot = t.get_rotation() % 180
    if rot in (0, 90):
        w, h = (bb.width, bb.height) if rot == 0 else (bb.height, bb.width)
    else:
        t.set_rotation(0)
        b0 = t.get_window_extent(renderer)
        t.set_rotation(rot)
        w, h = b0.width, b0.height
    w, h = max(w - 2 * shrink, 0.0), max(h - 2 * shrink, 0.0)
    if w == 0 or h == 0:
        return None
    cx, cy = (bb.x0 + bb.x1) / 2, (bb.y0 + bb.y1) / 2  # a rotated rectangle is centred in its bounding box
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    return [(cx + dx * c - dy * s, cy + dx * s + dy * c) for dx, dy in
            ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))]


def _convex_overlap(p, q) -> bool:
    """Separating-axis test of two convex polygons."""
    for poly in (p, q):
        for k in range(len(poly)):
            (x0, y0), (x1, y1) = poly[k], poly[(k + 1) % len(poly)]
            nx, ny = y0 - y1, x1 - x0
            a = [nx * x + ny * y for x, y in p]
            b = [nx * x + ny * y for x, y in q]
            if max(a) <= min(b) or max(b) <= min(a):
                return False
    return True


def text_overlaps(fig, *, tolerance_px: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of visible text artists of ``fig`` whose drawn (rotated) rectangles overlap by more than
    ``tolerance_px``: tick labels running into each other, a title into a legend, a note into an axis label.
    Draws the figure (its layout engine runs) and measures in display pixels. An empty list is a figure whose
    text reads cleanly; ``save_figure`` records the count in each PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)  # pyplot-free figures
    canvas.draw()
    renderer = canvas.get_renderer()
    # tick labels outside the view limits exist as artists but are not drawn: only the drawn ones count
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            try:
                drawn = set(map(id, axis._update_ticks()))  # the ticks Axis.draw draws
            except AttributeError:  # a future matplotlib without it: count every tick label
                continue
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if id(tick) not in drawn:
                    hidden.update((id(tick.label1), id(tick.label2)))
    polys = []
    for t in fig.findobj(Text):
        if id(t) in hidden or not t.get_visible() or not t.get_text().strip():
            continue
        ax = t.axes
        if ax is not None and not ax.get_visible():
            continue
        try:
            poly = _text_polygon(t, renderer, tolerance_px)
        except (RuntimeError, ValueError):
            continue
        if poly is not None:
            polys.append((t.get_text(), poly))
    out = []
    for a in range(len(polys)):
        for b in range(a + 1, len(polys)):
            if _convex_overlap(polys[a][1], polys[b][1]):
                out.append((polys[a][0], polys[b][0]))
    return out
