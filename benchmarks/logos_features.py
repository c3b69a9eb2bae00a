"""How much of the logos labels a raster shows: a reference point for the logos preset's CNN.

    python benchmarks/logos_features.py [--root ../shared/data/logos]

The labels are derived by rule from the SVG source (gradient fill; aspect >= 2.5; <= 4 shapes and <= 2
dominant colours). This measures eight plain colour and shape statistics of each 256 px raster and scores a
gradient-boosted tree on them, 5-fold and grouped by brand like the preset's split. Where this tree does well
and the CNN does not, the network is the limit; where both fail, the raster does not show the rule. Writes
benchmarks/results/logos_features.json and prints per-class recall.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import accuracy_score, recall_score
from sklearn.model_selection import GroupKFold, cross_val_predict

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ("aspect", "top2_share", "top4_share", "colours_over_1pct", "soft_steps", "blobs", "ink", "colours")


def measure(path: Path) -> list[float]:
    """Ink bounding-box aspect, dominant-colour shares and count (16 levels per channel), the share of small
    neighbour steps inside the ink (gradients are many small steps, flat fills none), connected blobs."""
    rgb = np.asarray(Image.open(path).convert("RGB"))[::2, ::2].astype(int)
    ink = (rgb < 245).any(-1)
    if not ink.any():
        return [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    ys, xs = np.nonzero(ink)
    aspect = (np.ptp(xs) + 1) / (np.ptp(ys) + 1)
    _, counts = np.unique((rgb[ink] // 16), axis=0, return_counts=True)
    share = np.sort(counts)[::-1] / counts.sum()
    step = np.abs(np.diff(rgb, axis=1)).max(-1)
    soft = ((step > 0) & (step < 24))[ink[:, 1:]].mean()
    blobs = ndimage.label(ink)[1]
    return [aspect, share[:2].sum(), share[:4].sum(), (share > 0.01).sum(), soft, blobs, ink.mean(), len(share)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "logos")
    args = p.parse_args()
    manifest = pd.read_csv(args.root / "manifest.csv")
    x = np.array([measure(args.root / r.heuristic_label / f"{r.id}.png") for r in manifest.itertuples()])
    y = manifest["heuristic_label"].to_numpy()
    pred = cross_val_predict(
        GradientBoostingClassifier(random_state=0), x, y, groups=manifest["brand"], cv=GroupKFold(5)
    )
    classes = sorted(set(y))
    result = {
        "features": list(FEATURES),
        "images": len(y),
        "accuracy": round(float(accuracy_score(y, pred)), 4),
        "recall": dict(
            zip(classes, recall_score(y, pred, labels=classes, average=None).round(4).tolist(), strict=True)
        ),
    }
    print(f"{len(y)} logos, 5 brand-grouped folds: accuracy {result['accuracy']:.3f}")
    print("| class | recall |\n|---|---|")
    for name, value in result["recall"].items():
        print(f"| {name} | {value:.3f} |")
    out = ROOT / "benchmarks" / "results" / "logos_features.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
