"""Decision thresholds for binary models, chosen on the validation split and stored with the version.

    choose_threshold(y, p_pos, objective="f1")                          # F1-optimal
    choose_threshold(y, p_pos, objective="precision", target_precision=0.95)  # best recall at >= 95% precision
    preds = decide(probs, threshold)                                      # what evaluation and scoring predict
    centred = at_threshold(probs, threshold)       # the threshold moved to 0.5: confidence measured from it

The positive class is the second of two (data.binary_target puts the target last).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.metrics import precision_recall_curve


def choose_threshold(
    targets: np.ndarray,
    pos_probs: np.ndarray,
    objective: Literal["f1", "precision"] = "f1",
    target_precision: float = 0.95,
) -> dict[str, float]:
    """Threshold on P(positive) and the precision/recall/F1 it gives on these labels.

    For `precision`, the threshold with the best recall among those reaching `target_precision`; if none
    does, the one with the highest precision (and `met` is 0.0, so a gate can refuse it).
    """
    precision, recall, thresholds = precision_recall_curve(targets, pos_probs)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    met = 1.0
    if objective == "f1":
        i = int(np.argmax(f1))
    else:
        ok = np.flatnonzero(precision >= target_precision)
        if ok.size:
            i = int(ok[np.argmax(recall[ok])])
        else:
            i, met = int(np.argmax(precision)), 0.0
    return {
        "threshold": float(thresholds[i]),
        "precision": float(precision[i]),
        "recall": float(recall[i]),
        "f1": float(f1[i]),
        "objective_met": met,
    }


def decide(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Predicted class indices: argmax, or for a binary model with a threshold, positive iff P(positive) >= it."""
    if threshold is None:
        return probs.argmax(axis=1)
    if probs.shape[1] != 2:
        raise ValueError(f"a decision threshold needs two classes, these probabilities have {probs.shape[1]}")
    return (probs[:, 1] >= threshold).astype(np.int64)


def at_threshold(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """A binary model's probabilities with its threshold moved to 0.5 (the positive logit shifted by the
    threshold's), so the predicted class is the likelier one and confidence, margin and entropy measure how far an
    image is from the decision, not from 0.5. Without a threshold, `probs` unchanged."""
    if threshold is None:
        return probs
    decide(probs[:0], threshold)  # the two-class check
    t = np.clip(threshold, 1e-12, 1 - 1e-12)
    p = np.clip(probs[:, 1], 1e-12, 1 - 1e-12)
    pos = 1.0 / (1.0 + (1 - p) / p * t / (1 - t))  # sigmoid(logit(p) - logit(t))
    return np.column_stack([1 - pos, pos])
