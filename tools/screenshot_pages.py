"""Open every rendered page of a study in headless Chromium, screenshot it, check its figures.

    .venv/bin/python tools/screenshot_pages.py [results] [--out DIR]

For ``results/index.html``, each ``results/notebooks/*.html`` and (if made) ``results/report.html``:
the page's DOM after load (``--dump-dom``) must hold images (the notebooks' figures are embedded
PNGs, which must decode; the index's thumbnails are files, which must exist), and its screenshot
(``--screenshot``, one window of ``--window`` pixels) must not be blank. Screenshots land in
``--out`` (default ``<results>/screenshots``). Exit status 1 if a page fails, 2 without Chromium
(Debian: ``apt-get install chromium``). Not part of the test suite's requirements: CI has no
browser; ``tests/test_workflow.py`` runs it on the tiny study where Chromium is installed.
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class PageCheck:
    page: Path
    screenshot: Path
    images: int = 0
    ink: float = 0.0  # share of the screenshot's pixels that are not background (%)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def pages_of(results: Path) -> list[Path]:
    pages = [results / "index.html", *sorted((results / "notebooks").glob("*.html"))]
    if (results / "report.html").exists():
        pages.append(results / "report.html")
    return [p for p in pages if p.exists()]


def _chromium(chromium: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def image_sources(dom: str) -> list[str]:
    return re.findall(r"<img\b[^>]*?\bsrc=\"([^\"]+)\"", dom)


def check_image(source: str, page: Path) -> str | None:
    """A problem with one ``<img src>`` of ``page`` (None when the image is there)."""
    if source.startswith("data:image/png;base64,"):
        data = base64.b64decode(source.split(",", 1)[1])
        if not data.startswith(PNG_SIGNATURE) or len(data) < 1000:
            return f"embedded image is not a PNG figure ({len(data)} bytes)"
        return None
    if source.startswith("data:"):
        return None
    url = urlparse(source)
    if url.scheme in ("http", "https"):
        return f"image from the network: {source}"
    path = Path(unquote(url.path)) if url.scheme == "file" else page.parent / unquote(url.path)
    if not path.is_file() or path.stat().st_size == 0:
        return f"image file missing: {source}"
    return None


def ink(screenshot: Path) -> float:
    """Share (%) of pixels that differ clearly from the screenshot's most common colour."""
    import matplotlib.image

    pixels = matplotlib.image.imread(screenshot)[..., :3]
    flat = (pixels.reshape(-1, 3) * 255).round().astype(np.int16)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return 100.0 * float((np.abs(flat - background).sum(axis=1) > 30).mean())


def check_page(
    chromium: str, page: Path, out_dir: Path, *, window: str = "1280,2000", min_ink: float = 2.0
) -> PageCheck:
    page = page.resolve()
    name = page.stem if page.parent.name != "notebooks" else f"notebooks_{page.stem}"
    check = PageCheck(page=page, screenshot=out_dir / f"{name}.png")
    dom = _chromium(chromium, "--dump-dom", page.as_uri())
    if dom.returncode != 0 or "<html" not in dom.stdout:
        check.problems.append(f"--dump-dom failed ({dom.returncode}): {dom.stderr[-300:]}")
        return check
    sources = image_sources(dom.stdout)
    check.images = len(sources)
    if page.name != "report.html":  # Snakemake's report draws its figures on demand
        if not sources:
            check.problems.append("no <img> in the page")
        check.problems += [p for s in sources if (p := check_image(s, page))]
    shot = _chromium(
        chromium, f"--screenshot={check.screenshot}", f"--window-size={window}", page.as_uri()
    )
    if shot.returncode != 0 or not check.screenshot.exists():
        check.problems.append(f"--screenshot failed ({shot.returncode}): {shot.stderr[-300:]}")
        return check
    check.ink = ink(check.screenshot)
    if check.ink < min_ink:
        check.problems.append(f"screenshot nearly blank ({check.ink:.2f}% ink)")
    return check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results", type=Path)
    parser.add_argument(
        "--out", type=Path, help="screenshots folder (default <results>/screenshots)"
    )
    parser.add_argument("--window", default="1280,2000", help="window size, pixels (width,height)")
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found: on Debian, `apt-get install chromium`", file=sys.stderr)
        return 2
    pages = pages_of(args.results)
    if not pages:
        print(f"no rendered pages under {args.results}: run the workflow first", file=sys.stderr)
        return 1
    out_dir = args.out or args.results / "screenshots"
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for page in pages:
        check = check_page(chromium, page, out_dir, window=args.window)
        status = "ok" if check.ok else "FAILED: " + "; ".join(check.problems)
        print(
            f"{page.relative_to(args.results)}: {check.images} images, {check.ink:.1f}% ink, "
            f"screenshot {check.screenshot}: {status}"
        )
        failed += not check.ok
    print(f"{len(pages) - failed} of {len(pages)} pages ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
