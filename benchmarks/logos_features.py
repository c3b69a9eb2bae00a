"""How much of the logos labels a raster shows: a reference point for the logos preset's CNN.

    python benchmarks/logos_features.py [--root ../shared/data/logos]

The labels are derived by rule from the SVG source: gradient if a fill is a gradient; else text if the aspect is
at least 2.5; else simple if at most 4 shapes and at most 2 dominant colours; else complex. This measures plain
geometry, flat-colour and gradient statistics of each 256 px raster and scores a gradient-boosted tree on them,
5-fold and grouped by brand like the preset's split. Where this tree does well and the CNN does not, the network
is the limit; where both fail, the raster does not show the rule. Complex recall is also split by why the rule
called a logo complex (more than 2 colours, or only more than 4 SVG shapes), from the manifest's measured
features. Writes benchmarks/results/logos_features.json and prints the tables.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import accuracy_score, recall_score
from sklearn.model_selection import GroupKFold, cross_val_predict

ROOT = Path(__file__).resolve().parent.parent
SOFT = 24  # a neighbour step below this (of 255, any channel) is shading, not an edge
SHARES = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1)  # a flat colour counts when it covers this share of the ink
FEATURES = (
    ("aspect", "ink", "flat", "soft_interior", "soft")
    + tuple(f"colours_over_{s:g}" for s in SHARES)
    + ("top1", "top2", "top3", "flat_colours", "blobs", "blobs_over_20", "blobs_over_200", "holes")
    + ("colour_regions", "colours_16", "colours_16_over_1pct", "mean_step")
)


def _steps(rgb: np.ndarray) -> np.ndarray:
    """Per pixel, the largest step (any channel) to one of its four neighbours."""
    dx, dy = np.abs(np.diff(rgb, axis=1)).max(-1), np.abs(np.diff(rgb, axis=0)).max(-1)
    step = np.zeros(rgb.shape[:2], int)
    step[:, 1:] = dx
    step[:, :-1] = np.maximum(step[:, :-1], dx)
    step[1:] = np.maximum(step[1:], dy)
    step[:-1] = np.maximum(step[:-1], dy)
    return step


def measure(path: Path) -> list[float]:
    """Geometry (ink bounding-box aspect, ink share, blobs, enclosed holes), flat colours (pixels equal to their
    four neighbours: how many colours cover how much ink, and their connected regions) and shading (small steps
    away from edges: a gradient is many of them, a flat fill none)."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    ink = (rgb < 245).any(-1)
    if not ink.any():
        return [0.0] * len(FEATURES)
    ys, xs = np.nonzero(ink)
    step = _steps(rgb)
    near_edge = ndimage.binary_dilation(step >= SOFT, iterations=2)
    soft = (step > 0) & (step < SOFT) & ink & ~near_edge
    flat = (step == 0) & ink
    key = rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]
    values, counts = np.unique(key[flat], return_counts=True)
    share = np.sort(counts)[::-1] / ink.sum() if len(counts) else np.zeros(1)
    regions = sum(
        int((np.bincount(ndimage.label(key == v)[0].ravel())[1:] > 20).sum()) for v in values[counts > 0.01 * ink.sum()]
    )
    labels, n_blobs = ndimage.label(ink)
    sizes = np.bincount(labels.ravel())[1:]
    background, _ = ndimage.label(~ink)
    outside = np.unique(np.r_[background[0], background[-1], background[:, 0], background[:, -1]])
    hole_sizes = np.bincount(background.ravel())
    holes = sum(1 for i in range(1, len(hole_sizes)) if i not in outside and hole_sizes[i] > 10)
    _, c16 = np.unique(rgb[ink] // 16, axis=0, return_counts=True)
    return [
        (np.ptp(xs) + 1) / (np.ptp(ys) + 1),
        ink.mean(),
        flat.sum() / ink.sum(),
        soft.sum() / max((ink & ~near_edge).sum(), 1),
        soft.sum() / ink.sum(),
        *[(share > s).sum() for s in SHARES],
        share[:1].sum(),
        share[:2].sum(),
        share[:3].sum(),
        len(counts),
        n_blobs,
        (sizes > 20).sum(),
        (sizes > 200).sum(),
        holes,
        regions,
        len(c16),
        (c16 / ink.sum() > 0.01).sum(),
        step[ink].mean(),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "logos")
    args = p.parse_args()
    manifest = pd.read_csv(args.root / "manifest.csv")
    paths = [args.root / r.heuristic_label / f"{r.id}.png" for r in manifest.itertuples()]
    with ProcessPoolExecutor() as pool:
        x = np.array(list(pool.map(measure, paths, chunksize=16)), dtype=float)
    y = manifest["heuristic_label"].to_numpy()
    tree = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=0)
    pred = cross_val_predict(tree, x, y, groups=manifest["brand"], cv=GroupKFold(5))
    classes = sorted(set(y))
    complex_ = y == "complex"
    by_colours = manifest["n_dom_colors"].to_numpy() > 2
    result = {
        "features": list(FEATURES),
        "images": len(y),
        "accuracy": round(float(accuracy_score(y, pred)), 4),
        "recall": dict(
            zip(classes, recall_score(y, pred, labels=classes, average=None).round(4).tolist(), strict=True)
        ),
        "complex_recall_by_reason": {
            reason: {"n": int(mask.sum()), "recall": round(float((pred[mask] == "complex").mean()), 4)}
            for reason, mask in (
                ("more than 2 colours", complex_ & by_colours),
                ("only more than 4 shapes", complex_ & ~by_colours),
            )
        },
    }
    print(f"{len(y)} logos, {len(FEATURES)} features, 5 brand-grouped folds: accuracy {result['accuracy']:.3f}")
    print("| class | recall |\n|---|---|")
    for name, value in result["recall"].items():
        print(f"| {name} | {value:.3f} |")
    print("\n| complex because | logos | recall |\n|---|---|---|")
    for reason, r in result["complex_recall_by_reason"].items():
        print(f"| {reason} | {r['n']} | {r['recall']:.3f} |")
    out = ROOT / "benchmarks" / "results" / "logos_features.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
