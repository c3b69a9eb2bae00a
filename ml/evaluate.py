"""Classification metrics from predicted probabilities: overall, per class, confusion matrix."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def predict(
    model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (N x C, float64) and integer targets for every item of the loader."""
    model.eval()
    probs, targets = [], []
    for x, y in loader:
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(x.to(device, non_blocking=True))
        probs.append(torch.softmax(logits.float(), dim=1).cpu().double().numpy())
        targets.append(np.asarray(y))
    return np.concatenate(probs), np.concatenate(targets)


def classification_metrics(targets: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """accuracy, macro P/R/F1, AUROC (one-vs-rest for multiclass), log loss, per-class P/R/F1, confusion.

    AUROC is None when the split lacks a class (it is undefined there), never a made-up number.
    """
    labels = list(range(len(classes)))
    preds = probs.argmax(axis=1)
    prec, rec, f1, support = precision_recall_fscore_support(targets, preds, labels=labels, zero_division=0)
    clipped = np.clip(probs, 1e-12, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(accuracy_score(targets, preds)),
        "macro_f1": float(np.mean(f1)),
        "macro_precision": float(np.mean(prec)),
        "macro_recall": float(np.mean(rec)),
        "auroc": _auroc(targets, probs, labels),
        "loss": float(log_loss(targets, clipped, labels=labels)),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(classes, prec, rec, f1, support, strict=True)
        },
        "prediction_share": {c: float(np.mean(preds == i)) for i, c in enumerate(classes)},
        "confusion": confusion_matrix(targets, preds, labels=labels).tolist(),
        "n": len(targets),
    }


def _auroc(targets: np.ndarray, probs: np.ndarray, labels: list[int]) -> float | None:
    if len(np.unique(targets)) < len(labels):
        return None
    if len(labels) == 2:
        value = roc_auc_score(targets, probs[:, 1])
    else:
        value = roc_auc_score(targets, probs, multi_class="ovr", average="macro", labels=labels)
    return None if math.isnan(value) else float(value)
