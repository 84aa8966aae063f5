"""Figures that read cleanly: one colour per method everywhere, text that does not overlap, Fig. 3's layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from scjepa.contracts import score_record
from scjepa.report import figures as F
from scjepa.report.style import CONTROL_COLORS, METHOD_COLORS, method_colors, text_overlaps


def test_a_method_keeps_its_colour_whatever_the_figure_shows():
    a = method_colors(["pca", "scjepa", "mae", "scjepa_no_recon", "random"])
    b = method_colors(["scjepa", "scjepa_no_recon", "scjepa_2global"])
    assert a["scjepa"] == b["scjepa"] == METHOD_COLORS["scjepa"] and a["random"] == CONTROL_COLORS["random"]
    c = method_colors(["scjepa", "x1", "x2", "x3", "my_control"], {"my_control": "positive"})
    assert len({c["x1"], c["x2"], c["x3"], c["scjepa"]}) == 4  # unknown methods get distinct, unused colours
    assert c["my_control"] == "#3A3A3A"


def test_text_overlap_check_sees_overlaps_and_ignores_rotation_artefacts():
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot(111)
    ax.plot([25, 106], [1, 2])
    ax.set_xticks(range(0, 140, 20))  # ticks outside the view are not drawn: they cannot overlap
    ax.set_xlim(25, 106)
    assert text_overlaps(fig) == []
    ax.text(0.5, 0.5, "overlap me", transform=ax.transAxes)
    ax.text(0.52, 0.5, "overlap me too", transform=ax.transAxes)
    assert text_overlaps(fig) == [("overlap me", "overlap me too")]
    # 45° labels: their axis-aligned boxes overlap, the labels do not; crowded ones do
    fig2 = Figure(figsize=(3, 2))
    ax2 = fig2.add_subplot(111)
    ax2.bar(range(5), 1)
    ax2.set_xticks(range(5), ["a long label"] * 5, rotation=45, ha="right")
    assert text_overlaps(fig2) == []
    ax2.set_xticks(range(40), ["a long label"] * 40, rotation=45, ha="right")
    assert len(text_overlaps(fig2)) > 10


def _tissue(n=400, seed=0):
    rng = np.random.default_rng(seed)
    types = rng.choice([f"type {i} with a long name" for i in range(12)], n)
    return pd.DataFrame({"obs_name": [f"c{i}" for i in range(n)], "x": rng.uniform(0, 4000, n),
                         "y": rng.uniform(0, 1500, n), "cell_type": types, "split": "test", "pred_knn": types,
                         "pred_transfer": np.where(rng.random(n) < 0.8, types, types[0])})


def test_fig3_reads_cleanly_and_says_na_for_what_a_method_cannot_do(tmp_path):
    recs = [score_record("spatial", m, "sp", {"knn_macro_f1": v, "transfer_macro_f1": v - 0.1})
            for m, v in (("scjepa", 0.9), ("pca", 0.8), ("mae", 0.85))]
    recs += [score_record("finetune", m, "sp", {"macro_f1": 0.9}, seed=s) for m in ("scjepa", "mae") for s in (0, 1)]
    fig = F.fig3_spatial(recs, {"scjepa": _tissue(), "pca": _tissue(seed=1), "mae": _tissue(seed=2)},
                         ["scjepa", "pca", "mae"], dataset="sp", na=[{"task": "finetune", "method": "pca"}],
                         png=tmp_path / "f3.png", pdf=tmp_path / "f3.pdf")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "n/a" in texts and "failed" not in texts  # PCA's fine-tune bar
    assert text_overlaps(fig) == []
    with Image.open(tmp_path / "f3.png") as im:
        assert im.info["text_overlaps"] == "0"
    # the tissue panels keep the tissue's shape (equal aspect) and fill their axes: no letterbox
    ax_true = fig.axes[0]
    x0, x1 = ax_true.get_xlim()
    y0, y1 = ax_true.get_ylim()
    bbox = ax_true.get_window_extent()
    assert abs((bbox.height / bbox.width) - (y1 - y0) / (x1 - x0)) < 0.02
    # the legend of the bars sits above the axes, over no bar
    ax_bar = fig.axes[3]
    leg = ax_bar.get_legend().get_window_extent()
    assert leg.y0 >= ax_bar.get_window_extent().y1 - 1
