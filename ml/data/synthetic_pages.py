"""Generated handwriting-like pages with exact ink masks: the segmentation demo and tests need them.

Each page is textured paper (blotches, grain, faint ruled lines that are NOT ink) with random pen strokes,
Bezier curves and small letters (PIL's default font) in dark ink. The mask is the set of pixels drawn, so it
is exact; the image is painted from it. Page sides vary (0.75-1.25 x size), so odd sizes reach the tiling.
Same config -> same bytes; written in the image_mask layout:

    <root>/images/<id>.png   8-bit grey page
    <root>/masks/<id>.png    ink = 255, paper = 0

    python -m ml.data.synthetic_pages .visionflow/data/demo-seg --pages 24 --size 192
"""

from __future__ import annotations

import argparse
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ml.config.data import SyntheticConfig


def _paper(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Float grey paper in [0, 255]: a light level, soft blotches, grain and a few faint ruled lines."""
    level = rng.uniform(150, 235)
    coarse = rng.normal(0, 12, size=(5, 5)).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
    paper = level + blotches + rng.normal(0, 6, size=(h, w))
    gap = int(rng.integers(18, 40))
    for y in range(int(rng.integers(4, gap)), h, gap):
        paper[y] -= rng.uniform(8, 25)  # ruled lines: darker than paper, far lighter than ink
    return paper


def _bezier(points: np.ndarray, n: int = 40) -> list[tuple[float, float]]:
    """A cubic Bezier curve through 4 control points, as a polyline."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2, p3 = points
    curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    return [tuple(p) for p in curve]


def _ink_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Binary H x W: strokes, curves and words, their number scaled with the page area."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    scale = h * w / 192**2
    for _ in range(max(1, int(rng.poisson(4 * scale)))):  # pen strokes: short polylines
        start = rng.uniform([0, 0], [w, h])
        steps = rng.normal(0, min(h, w) / 8, size=(int(rng.integers(2, 5)), 2))
        pts = np.vstack([start, start + np.cumsum(steps, axis=0)])
        draw.line([tuple(p) for p in pts], fill=255, width=int(rng.integers(1, 5)), joint="curve")
    for _ in range(max(1, int(rng.poisson(3 * scale)))):  # curves
        ctrl = rng.uniform([0, 0], [w, h], size=(4, 2))
        draw.line(_bezier(ctrl), fill=255, width=int(rng.integers(1, 4)), joint="curve")
    for _ in range(max(1, int(rng.poisson(6 * scale)))):  # small words
        font = ImageFont.load_default(size=int(rng.integers(9, 20)))
        word = "".join(rng.choice(list(string.ascii_letters), size=int(rng.integers(2, 7))))
        draw.text(tuple(rng.uniform([0, 0], [w * 0.9, h * 0.95])), word, fill=255, font=font)
    return (np.asarray(canvas) > 127).astype(np.uint8)


def make_page(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image H x W uint8, mask H x W uint8 in {0, 1}) of one page about `size` px a side."""
    h, w = (int(size * f) for f in rng.uniform(0.75, 1.25, size=2))
    mask = _ink_mask(h, w, rng)
    ink = rng.uniform(15, 90) + rng.normal(0, 10, size=(h, w))
    image = np.where(mask > 0, ink, _paper(h, w, rng))
    return np.clip(image, 0, 255).round().astype(np.uint8), mask


def write_atomically(root: Path, fill: Callable[[Path], None]) -> Path:
    """Let `fill` write into a temp folder beside `root`, then rename it to `root`: readers never see half a
    dataset. An existing non-empty root is never overwritten; if another process finishes first, its copy wins."""
    root = Path(root).absolute()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty folder; not overwriting it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        fill(tmp)
        os.chmod(tmp, 0o755)
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root.is_dir() and any(root.iterdir())):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent run won the race
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def make_pages_dataset(root: Path, cfg: SyntheticConfig) -> Path:
    """Write `cfg.per_class` pages to <root>/images/ and <root>/masks/ (ids 0..N-1, zero-padded); returns root."""

    def fill(tmp: Path) -> None:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        width = len(str(cfg.per_class - 1))
        for k in range(cfg.per_class):
            image, mask = make_page(cfg.size, np.random.default_rng([cfg.seed % (1 << 63), k]))
            Image.fromarray(image).save(tmp / "images" / f"{k:0{width}d}.png")
            Image.fromarray(mask * 255).save(tmp / "masks" / f"{k:0{width}d}.png")

    return write_atomically(root, fill)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ml.data.synthetic_pages", description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--pages", type=int, default=24)
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    cfg = SyntheticConfig(kind="pages", per_class=a.pages, size=a.size, seed=a.seed)
    root = make_pages_dataset(a.root, cfg)
    print(f"wrote {cfg.per_class} pages of about {cfg.size} px with masks to {root}")


if __name__ == "__main__":
    main()
