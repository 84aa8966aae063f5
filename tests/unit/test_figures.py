"""Figures 2-4 are written as non-empty PNG and PDF, also when methods failed or lack inputs."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from scjepa.report import figures as F
from scjepa.contracts import score_record, write_score

SCRIPTS = Path(__file__).resolve().parents[2] / "workflow" / "scripts"


def _written(*paths):
    for p in paths:
        p = Path(p)
        assert p.exists() and p.stat().st_size > 1000, p
    assert Path(paths[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(paths[1]).read_bytes()[:5] == b"%PDF-"


def test_fig2_integration_with_a_failed_method(tmp_path):
    rng = np.random.default_rng(0)
    recs = [
        score_record(
            "integration",
            m,
            "lung",
            {"bio_conservation": rng.uniform(), "batch_correction": rng.uniform(), "total": rng.uniform()},
            seed=s,
        )
        for m in ("scjepa", "pca")
        for s in range(4)
    ]
    recs.append(score_record("integration", "scvi", "lung", seed=0, status="failed"))
    F.fig2_integration(recs, ["scjepa", "pca", "scvi", "harmony"], png=tmp_path / "f2.png", pdf=tmp_path / "f2.pdf")
    _written(tmp_path / "f2.png", tmp_path / "f2.pdf")


def test_fig3_spatial(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    types = rng.choice(["L1", "L2", "L3"], n)
    preds = pd.DataFrame(
        {
            "obs_name": [f"c{i}" for i in range(n)],
            "x": rng.uniform(0, 1, n),
            "y": rng.uniform(0, 1, n),
            "cell_type": types,
            "split": "test",
            "pred_knn": types,
            "pred_transfer": np.where(rng.random(n) < 0.8, types, "L1"),
        }
    )
    preds.to_csv(tmp_path / "scjepa.csv", index=False)
    recs = [
        score_record("spatial", "scjepa", "sp", {"knn_macro_f1": 0.9, "transfer_macro_f1": 0.7}),
        score_record("spatial", "mae", "sp", {"knn_macro_f1": 0.8, "transfer_macro_f1": 0.75}),
        score_record("finetune", "scjepa", "sp", {"macro_f1": 0.95}, seed=0),
    ]
    # mae has the better transfer score but no predictions file: the best *drawable* method is shown.
    F.fig3_spatial(
        recs,
        {"scjepa": tmp_path / "scjepa.csv", "mae": tmp_path / "missing.csv"},
        ["scjepa", "mae", "pca"],
        dataset="sp",
        png=tmp_path / "f3.png",
        pdf=tmp_path / "f3.pdf",
    )
    _written(tmp_path / "f3.png", tmp_path / "f3.pdf")


def test_fig4_training_dynamics_via_script(tmp_path):
    steps = np.arange(0, 200, 10)
    for m, terms in (("scjepa", ("sim", "sigreg", "recon")), ("mae", ("recon",))):
        d = tmp_path / m
        d.mkdir()
        df = pd.DataFrame({"step": steps, "epoch": steps // 50})
        df["loss"] = np.exp(-steps / 100) + 0.1
        for t in terms:
            df[t] = np.exp(-steps / 80) + 0.05
        df["val_knn_macro_f1"] = np.where(steps % 50 == 0, steps / 200, np.nan)
        df.to_csv(d / "curve.csv", index=False, na_rep="")
    smk = SimpleNamespace(
        input=SimpleNamespace(curves=[str(tmp_path / "scjepa"), str(tmp_path / "mae"), str(tmp_path / "gone")]),
        output=SimpleNamespace(png=str(tmp_path / "f4.png"), pdf=str(tmp_path / "f4.pdf")),
        params=SimpleNamespace(figure="training_dynamics", methods=["scjepa", "mae", "bt"]),
        log=[],
    )
    runpy.run_path(str(SCRIPTS / "make_figures.py"), init_globals={"snakemake": smk})
    _written(tmp_path / "f4.png", tmp_path / "f4.pdf")


def test_integration_figure_via_script(tmp_path):
    paths = []
    for s in range(3):
        r = score_record(
            "integration",
            "pca",
            "lung",
            {"bio_conservation": 0.5 + s / 10, "batch_correction": 0.4, "total": 0.5},
            seed=s,
        )
        paths.append(str(tmp_path / f"{s}.json"))
        write_score(r, paths[-1])
    smk = SimpleNamespace(
        input=SimpleNamespace(scores=paths + [str(tmp_path / "missing.json")]),
        output=SimpleNamespace(png=str(tmp_path / "f2.png"), pdf=str(tmp_path / "f2.pdf")),
        params=SimpleNamespace(figure="integration", methods=["pca", "scjepa"]),
        log=[],
    )
    runpy.run_path(str(SCRIPTS / "make_figures.py"), init_globals={"snakemake": smk})
    _written(tmp_path / "f2.png", tmp_path / "f2.pdf")


def test_style_and_dpi_reach_the_figure(tmp_path):
    import pytest
    from PIL import Image

    from scjepa.errors import InputError

    curves = tmp_path / "scjepa"
    curves.mkdir()
    pd.DataFrame({"step": [0, 10], "epoch": [0, 0], "loss": [1.0, 0.5]}).to_csv(curves / "curve.csv", index=False)
    try:
        for name, style, dpi in (("a", {}, 50), ("b", {}, 100), ("c", {"axes.titlesize": 14}, 50)):
            F.set_style(style, dpi)
            F.fig4_training_dynamics({"scjepa": str(curves)}, png=tmp_path / f"{name}.png")
        size = {n: Image.open(tmp_path / f"{n}.png").size for n in "abc"}
        assert size["b"][0] == pytest.approx(2 * size["a"][0], rel=0.05)  # pixels scale with dpi
        assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()  # the font size took
        with pytest.raises(InputError, match="report.style.font.sise"):
            F.set_style({"font.sise": 9})
        with pytest.raises(InputError, match="report.style.font.size"):
            F.set_style({"font.size": "huge-ish"})
    finally:
        F.set_style()
