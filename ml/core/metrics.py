"""Classification metrics from predicted probabilities: overall, per class, confusion matrix."""

from __future__ import annotations

import math
from typing import Any, Literal

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

from ml.core.thresholds import choose_threshold, decide


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


def classification_metrics(
    targets: np.ndarray, probs: np.ndarray, classes: list[str], threshold: float | None = None
) -> dict[str, Any]:
    """accuracy, macro P/R/F1, AUROC (one-vs-rest for multiclass), log loss, per-class P/R/F1, confusion.

    Predictions are the argmax, or with `threshold` (binary) P(positive) >= threshold. AUROC is None when the
    split lacks a class (it is undefined there), never a made-up number.
    """
    labels = list(range(len(classes)))
    preds = decide(probs, threshold)
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


def decided_metrics(
    targets: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    decision: Literal["argmax", "f1", "precision"] = "argmax",
    target_precision: float = 0.95,
) -> dict[str, Any]:
    """classification_metrics at the decision rule of eval.decision: argmax, or (binary) the threshold on
    P(classes[1]) chosen on these labels, F1-optimal or the best recall at `target_precision`. The chosen
    threshold and the argmax figures go in `decision`, so the report shows what the threshold bought."""
    if decision == "argmax":
        return classification_metrics(targets, probs, classes)
    if len(classes) != 2:
        raise ValueError(f"eval.decision={decision} needs a binary model; classes are {classes}")
    chosen = choose_threshold(targets == 1, probs[:, 1], decision, target_precision)
    argmax = classification_metrics(targets, probs, classes)
    metrics = classification_metrics(targets, probs, classes, chosen["threshold"])
    metrics["decision"] = {
        "rule": decision,
        "positive": classes[1],
        **chosen,
        "argmax_accuracy": argmax["accuracy"],
        "argmax_macro_f1": argmax["macro_f1"],
    }
    return metrics


def decision_threshold(metrics: dict[str, Any]) -> float | None:
    """The binary threshold decided_metrics chose (None: argmax)."""
    return (metrics.get("decision") or {}).get("threshold")


def accuracy_by(groups: np.ndarray, targets: np.ndarray, preds: np.ndarray) -> dict[str, dict[str, Any]]:
    """Share classified right per group, hardest first: for target-vs-rest, how often each source category
    (a hard negative such as `banana` for `fish`) is told apart."""
    rows = {
        str(g): {"n": int(m.sum()), "accuracy": float(np.mean(preds[m] == targets[m]))}
        for g in np.unique(groups)
        for m in [groups == g]
    }
    return dict(sorted(rows.items(), key=lambda kv: kv[1]["accuracy"]))


def _auroc(targets: np.ndarray, probs: np.ndarray, labels: list[int]) -> float | None:
    if len(np.unique(targets)) < len(labels):
        return None
    if len(labels) == 2:
        value = roc_auc_score(targets, probs[:, 1])
    else:
        value = roc_auc_score(targets, probs, multi_class="ovr", average="macro", labels=labels)
    return None if math.isnan(value) else float(value)
