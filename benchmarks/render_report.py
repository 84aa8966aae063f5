"""Look at the report: render every figure and the HTML report to images, and count figures whose text overlaps.

    .venv/bin/python benchmarks/render_report.py --workdir /tmp/run [--out /tmp/run/rendered]
        [--configfile config/config.yaml] [--config methods=[...]] [--no-report]

1. Builds the HTML report (``snakemake -d WORKDIR --report WORKDIR/results/report.html``; it renders what is
   there, it runs no job) and measures its size and the time it took.
2. Screenshots it with headless Chromium (Debian: ``apt-get install -y chromium``): the landing page as it opens.
3. Rasterises every PDF figure at 100 dpi with ``pdftoppm`` (poppler-utils) -- what a reader sees at 100 % zoom.
4. Counts the figures whose text overlaps: every PNG the library writes carries the count that
   ``scjepa.report.style.text_overlaps`` measured on the figure's text artists (PNG tEXt ``text_overlaps``);
   a figure without it was not drawn by ``save_figure`` and is listed as unchecked.

Writes ``OUT/render.json`` (report size and time, overlaps per figure, image paths) and prints it. Exit status 1
when a figure's text overlaps. Look at the images in OUT before calling a figure done.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_report(workdir: Path, configfile: str, config: list[str], out: Path) -> dict:
    html = workdir / "results" / "report.html"
    cmd = [str(ROOT / ".venv" / "bin" / "snakemake"), "-d", str(workdir), "--configfile", configfile,
           "--cores", "1", "--report", str(html)]
    if config:
        cmd += ["--config", *config]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (out / "report.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not html.exists():
        raise SystemExit(f"snakemake --report failed (see {out / 'report.log'})")
    return {"report": str(html), "report_bytes": html.stat().st_size, "report_seconds": round(seconds, 1),
            "report_warnings": [line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR/" in line]}


def screenshot(html: Path, png: Path, size=(1400, 1800)) -> str | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return None
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=8000", f"--screenshot={png}",
                    html.resolve().as_uri()], capture_output=True, timeout=180)
    return str(png) if png.exists() else None


def rasterise_pdfs(figures: Path, out: Path) -> list[str]:
    if shutil.which("pdftoppm") is None:
        return []
    made = []
    for pdf in sorted(figures.glob("*.pdf")):
        stem = out / f"{pdf.stem}_100dpi"
        subprocess.run(["pdftoppm", "-r", "100", "-png", "-singlefile", str(pdf), str(stem)], check=True)
        made.append(str(stem) + ".png")
    return made


def overlap_counts(figures: Path) -> dict[str, int | None]:
    from PIL import Image

    counts = {}
    for png in sorted(figures.glob("*.png")):
        with Image.open(png) as im:
            value = im.info.get("text_overlaps")
        counts[png.name] = int(value) if value is not None else None
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--configfile", default="config/config.yaml")
    ap.add_argument("--config", nargs="*", default=[])
    ap.add_argument("--no-report", action="store_true", help="only the figures")
    a = ap.parse_args(argv)
    out = a.out or a.workdir / "rendered"
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    if not a.no_report:
        result.update(build_report(a.workdir, a.configfile, a.config, out))
        result["report_screenshot"] = screenshot(Path(result["report"]), out / "report_landing.png")
    figures = a.workdir / "results" / "figures"
    result["figures_100dpi"] = rasterise_pdfs(figures, out)
    counts = overlap_counts(figures)
    result["text_overlaps"] = counts
    result["figures_with_overlaps"] = sorted(k for k, v in counts.items() if v)
    result["figures_unchecked"] = sorted(k for k, v in counts.items() if v is None)
    (out / "render.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 1 if result["figures_with_overlaps"] else 0


if __name__ == "__main__":
    sys.exit(main())
