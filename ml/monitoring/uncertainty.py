"""How unsure the model is about an image: the score active learning ranks a pool by (higher = label it sooner).

    scores = class_uncertainty(probs)                     # N x K probabilities -> least_confidence, margin, entropy
    scores = uncertainty_columns(frame)                   # the same from a scored frame (ml.monitoring.scoring columns)
    row = pixel_uncertainty(prob_map, band=(0.25, 0.75))  # one segmenter's H x W foreground probabilities

Classifiers: least confidence = 1 - top probability; margin = 1 - (top1 - top2); entropy in nats (a binary model
with a decision threshold: of its probabilities with the threshold moved to 0.5, ml.core.thresholds.at_threshold). A
binary segmenter's pixel is a two-class problem (p, 1 - p): the same three measures per pixel, averaged over the image,
plus uncertain_share, the share of pixels whose probability lies in the band (a large unsure region counts more
than a thin unsure outline that the mean would dilute).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ml.monitoring.scoring import prediction_columns

CLASS_MEASURES = ("least_confidence", "margin", "entropy")
PIXEL_MEASURES = (*CLASS_MEASURES, "uncertain_share")


def uncertainty_columns(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """least_confidence, margin and entropy scores from confidence / margin / entropy columns
    (ml.monitoring.scoring)."""
    return {
        "least_confidence": 1.0 - np.asarray(columns["confidence"], dtype=np.float64),
        "margin": 1.0 - np.asarray(columns["margin"], dtype=np.float64),
        "entropy": np.asarray(columns["entropy"], dtype=np.float64),
    }


def class_uncertainty(probs: np.ndarray) -> dict[str, np.ndarray]:
    """The three scores of N x K class probabilities (rows sum to 1)."""
    return uncertainty_columns(prediction_columns(probs, [str(k) for k in range(probs.shape[1])]))


def pixel_uncertainty(prob: np.ndarray, band: tuple[float, float]) -> dict[str, float]:
    """Per-image confidence / margin / entropy (means over pixels) and uncertain_share of a foreground map."""
    p = np.clip(prob.astype(np.float64, copy=False), 1e-12, 1 - 1e-12)
    confidence = np.maximum(p, 1 - p)
    entropy = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    return {
        "confidence": float(confidence.mean()),
        "margin": float((2 * confidence - 1).mean()),
        "entropy": float(entropy.mean()),
        "uncertain_share": float(((prob >= band[0]) & (prob <= band[1])).mean()),
    }


def uncertainty(columns: Mapping[str, np.ndarray], measure: str) -> np.ndarray:
    """One measure's scores for scored rows; uncertain_share exists only in a segmenter's rows."""
    if measure == "uncertain_share":
        if "uncertain_share" not in columns:
            raise ValueError("measure uncertain_share is a segmenter's (share of unsure pixels); use entropy")
        return np.asarray(columns["uncertain_share"], dtype=np.float64)
    if measure not in CLASS_MEASURES:
        raise ValueError(f"unknown uncertainty measure {measure!r}; known: {list(PIXEL_MEASURES)}")
    return uncertainty_columns(columns)[measure]
