"""Generated shapes dataset: the demo and the tests need learnable image data that ships with the code.

Each class is one shape in its own hue band, drawn with random position, size,
rotation and colour on a noisy textured background: a tiny CNN learns it in a few epochs, yet it is not
separable by a single pixel statistic. Same config -> same bytes.

    python -m ml.data.synthetic .visionflow/data/demo --per-class 60 --size 32
"""

from __future__ import annotations

import argparse
import colorsys
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ml.config.data import SyntheticConfig

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "line", "star")
SUPERSAMPLE = 4  # draw large, shrink: antialiased edges without a slow renderer


def _plan(classes: list[str]) -> list[tuple[str, float, float]]:
    """(shape, hue_low, hue_high) per class: its own shape where possible and always its own hue band.

    Known shape names keep their shape, other names take the unused shapes in turn (cycling when classes
    outnumber shapes). The disjoint hue bands are what a tiny model picks up in a few epochs on a few
    hundred images; the shape is the second, consistent cue.
    """
    bad = [c for c in classes if not c or c.startswith(".") or "/" in c or "\\" in c or c == "masks"]
    if bad or len(set(classes)) != len(classes):
        raise ValueError(f"synthetic classes must be unique folder names (not hidden, not 'masks'): {classes}")
    free = [s for s in SHAPES if s not in classes] or list(SHAPES)
    plan, k, n = [], 0, len(classes)
    for i, c in enumerate(classes):
        if c in SHAPES:
            shape = c
        else:
            shape, k = free[k % len(free)], k + 1
        plan.append((shape, (i + 0.1) / n, (i + 0.9) / n))
    return plan


def _polygon(shape: str) -> np.ndarray:
    """Unit-radius outline centred on 0 (x, y rows) for the polygon shapes."""
    if shape == "square":
        return np.array([[-0.75, -0.75], [0.75, -0.75], [0.75, 0.75], [-0.75, 0.75]])
    if shape == "triangle":
        a = np.deg2rad([90, 210, 330])
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "cross":
        w = 0.3
        return np.array(
            [[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]]
        )
    if shape == "diamond":  # a rhombus, so that rotation cannot turn it into the square
        return np.array([[0, -1], [0.5, 0], [0, 1], [-0.5, 0]])
    if shape == "line":
        return np.array([[-1, -0.16], [1, -0.16], [1, 0.16], [-1, 0.16]])
    a = np.deg2rad(np.arange(10) * 36 - 90)  # star
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Antialiased coverage in [0, 1] of one randomly placed, scaled and rotated shape."""
    big = size * SUPERSAMPLE
    r = rng.uniform(0.24, 0.44) * big
    cx, cy = rng.uniform(0.85 * r, big - 0.85 * r, size=2)
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if shape in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if shape == "ring":
            ri = r * rng.uniform(0.5, 0.62)
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    else:
        t = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        pts = _polygon(shape) @ rot.T * r + [cx, cy]
        draw.polygon([tuple(p) for p in pts], fill=255)
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _background(size: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Greyish (hue carries the class) low-frequency texture plus pixel noise; its level is returned."""
    level = rng.uniform(0.12, 0.88)
    coarse = rng.uniform(-0.12, 0.12, size=(4, 4)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR))
    tint = rng.uniform(-0.05, 0.05, size=3)
    bg = level + texture[..., None] + tint + rng.normal(0, 0.05, size=(size, size, 3))
    return bg.astype(np.float32), level


def _image(shape: str, hues: tuple[float, float], size: int, rng: np.random.Generator) -> np.ndarray:
    bg, level = _background(size, rng)
    # light shape on a dark ground or dark on light, never so dark that its hue is lost
    value = rng.uniform(max(level + 0.3, 0.7), 1.0) if level < 0.6 else rng.uniform(0.35, level - 0.25)
    fg = np.array(colorsys.hsv_to_rgb(rng.uniform(*hues), rng.uniform(0.65, 1.0), value), np.float32)
    alpha = _mask(shape, size, rng)[..., None]
    img = bg * (1 - alpha) + fg * alpha + rng.normal(0, 0.04, size=(size, size, 3)).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_shapes_dataset(root: Path, cfg: SyntheticConfig) -> Path:
    """Write `<root>/<class>/<i>.png` atomically (temp dir beside root, then rename); returns root.

    An existing non-empty root is never overwritten (FileExistsError); if another process finishes the
    same dataset first, its copy is kept.
    """
    root = Path(root).absolute()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty folder; not overwriting it")
    plan = _plan(list(cfg.classes))
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        width = len(str(cfg.per_class - 1))
        for i, (cls, (shape, lo, hi)) in enumerate(zip(cfg.classes, plan, strict=True)):
            rng = np.random.default_rng([cfg.seed % (1 << 63), i])
            (tmp / cls).mkdir()
            for k in range(cfg.per_class):
                Image.fromarray(_image(shape, (lo, hi), cfg.size, rng)).save(tmp / cls / f"{k:0{width}d}.png")
        os.chmod(tmp, 0o755)
        try:
            os.replace(tmp, root)
        except OSError:
            if root.is_dir() and any(root.iterdir()):  # a concurrent run won the race
                shutil.rmtree(tmp, ignore_errors=True)
                return root
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ml.data.synthetic", description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--per-class", type=int, default=SyntheticConfig().per_class)
    p.add_argument("--size", type=int, default=SyntheticConfig().size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", default=",".join(SyntheticConfig().classes), help="comma-separated class names")
    a = p.parse_args(argv)
    cfg = SyntheticConfig(classes=a.classes.split(","), per_class=a.per_class, size=a.size, seed=a.seed)
    root = make_shapes_dataset(a.root, cfg)
    print(f"wrote {len(cfg.classes)} x {cfg.per_class} images of {cfg.size}x{cfg.size} to {root}")


if __name__ == "__main__":
    main()
