"""Binary segmentation metrics on whole images, as document-binarisation contests (DIBCO) report them.

    scores = image_scores(pred, truth, boundary=2)           # one image: f1, iou, precision, recall, edge_iou
    metrics = summarize([scores, ...])                       # the mean over images (DIBCO averages per image)
    cleaned = postprocess(pred, close=3, min_component=20)   # optional clean-up, reported beside the raw numbers

F1 is the pixel F-measure 2PR / (P + R) with foreground as the positive class. Edge IoU is boundary IoU
(Cheng et al. 2021): the IoU of the bands of width `boundary` px inside each mask's contour, which thin
strokes and ragged outlines fail even when the pixel IoU looks fine. An image with no foreground in
either mask scores 1 (nothing to find, nothing found); one side empty scores 0 (precision too).
"""

from __future__ import annotations

import cv2
import numpy as np

SCORES = ("f1", "iou", "precision", "recall", "edge_iou")


def _ratio(num: int, den: int) -> float:
    return 1.0 if den == 0 else num / den


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Foreground pixels within `width` px of the background (the image border does not count as background)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    m = mask.astype(np.uint8)
    inner = cv2.erode(m, kernel, borderType=cv2.BORDER_REPLICATE)
    return (m > 0) & (inner == 0)


def image_scores(pred: np.ndarray, truth: np.ndarray, boundary: int = 2) -> dict[str, float]:
    """f1, iou, precision, recall and edge_iou of one H x W binary prediction against its mask."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and mask {truth.shape} differ in size")
    p, t = pred.astype(bool), truth.astype(bool)
    tp = int(np.count_nonzero(p & t))
    fp, fn = int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp
    bp, bt = boundary_band(p, boundary), boundary_band(t, boundary)
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": tp / (tp + fp) if tp + fp else float(tp + fn == 0),
        "recall": _ratio(tp, tp + fn),
        "edge_iou": _ratio(int(np.count_nonzero(bp & bt)), int(np.count_nonzero(bp | bt))),
    }


def postprocess(pred: np.ndarray, close: int = 0, min_component: int = 0) -> np.ndarray:
    """Morphological closing (ellipse of side `close`), then drop 8-connected components under `min_component` px."""
    out = pred.astype(np.uint8)
    if close > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close, close))
        out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    if min_component > 1:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(out, connectivity=8)
        keep = stats[:, cv2.CC_STAT_AREA] >= min_component
        keep[0] = False  # label 0 is the background
        out = keep[labels].astype(np.uint8) if n > 1 else out
    return out


def summarize(per_image: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each score over the images (the DIBCO convention: every page counts the same)."""
    if not per_image:
        raise ValueError("no images to score")
    return {k: float(np.mean([s[k] for s in per_image])) for k in per_image[0]}
