"""A classifier's best checkpoint on the validation split (metrics at eval.decision, plots, TTA beside) and, when
there is one, on the test split at the decision chosen on validation (`metrics["test"]`)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ml.config.run import RunConfig
from ml.core.metrics import accuracy_by, classification_metrics, decided_metrics, decision_threshold, predict
from ml.core.thresholds import decide
from ml.data.prepare import PreparedData
from ml.evaluation.plots import confusion_png, curves_png
from ml.evaluation.record import Evaluation
from ml.evaluation.tta import FlipTTA, tta_metrics
from ml.training.classifier import datasets, load_split
from ml.training.datasets import ImageDataset, make_loader
from ml.training.loop import TrainResult, load_trained
from ml.training.models import pick_device


def by_source(prepared: PreparedData, side: str, targets: np.ndarray, preds: np.ndarray) -> dict | None:
    """Accuracy per original class of a split relabelled target-vs-rest (data.binary_target), else None."""
    frame = pd.read_csv(prepared.split_csv, keep_default_na=False)
    if "source_label" not in frame:
        return None
    return accuracy_by(frame.loc[frame["split"] == side, "source_label"].to_numpy(), targets, preds)


def decided_on_split(
    cfg: RunConfig, prepared: PreparedData, side: str, targets: np.ndarray, probs: np.ndarray
) -> dict[str, Any]:
    """decided_metrics at eval.decision, and for a split relabelled target-vs-rest `by_source` at that decision."""
    metrics = decided_metrics(targets, probs, prepared.classes, cfg.eval.decision, cfg.eval.target_precision)
    sources = by_source(prepared, side, targets, decide(probs, decision_threshold(metrics)))
    return metrics if sources is None else metrics | {"by_source": sources}


def applied_on_split(
    prepared: PreparedData, side: str, targets: np.ndarray, probs: np.ndarray, chosen: dict[str, Any]
) -> dict[str, Any]:
    """classification_metrics at the threshold `chosen` (validation's metrics) holds, never one chosen on this
    split: the test split's figures, with `by_source` for a split relabelled target-vs-rest."""
    threshold = decision_threshold(chosen)
    metrics = classification_metrics(targets, probs, prepared.classes, threshold)
    sources = by_source(prepared, side, targets, decide(probs, threshold))
    return metrics if sources is None else metrics | {"by_source": sources}


def _test_metrics(
    cfg: RunConfig, prepared: PreparedData, model: nn.Module, device: torch.device, val: dict, tta_val: dict | None
) -> dict[str, Any]:
    """The test split scored at validation's decision (with eval.tta, TTA at validation's TTA decision)."""
    test_ds = ImageDataset(*load_split(cfg, prepared, "test"))
    loader = make_loader(test_ds, cfg.train.batch_size, False, cfg.train.num_workers, cfg.train.seed)
    probs, targets = predict(model, loader, device)
    metrics = applied_on_split(prepared, "test", targets, probs, val)
    if cfg.eval.tta:
        tta_probs, _ = predict(FlipTTA(model, cfg.eval.tta), loader, device)
        tta = classification_metrics(targets, tta_probs, prepared.classes, decision_threshold(tta_val or {}))
        metrics |= tta_metrics(tta)
    return metrics


def evaluate_classifier(cfg: RunConfig, prepared: PreparedData, train: TrainResult, run_dir: Path) -> Evaluation:
    """Best checkpoint on the validation split: metrics JSON, confusion matrix and training curves PNGs.
    With eval.tta the flip-averaged metrics sit beside the plain ones as `<metric>_tta` (did TTA help?).
    With a test split, `metrics["test"]` holds its figures at the decisions chosen on validation."""
    device = pick_device(cfg.train.device)
    model, classes = load_trained(Path(train.best_checkpoint), cfg, device)
    _, val_ds = datasets(cfg, prepared)
    loader = make_loader(val_ds, cfg.train.batch_size, False, cfg.train.num_workers, cfg.train.seed)
    probs, targets = predict(model, loader, device)
    metrics, tta = decided_on_split(cfg, prepared, "val", targets, probs), None
    if cfg.eval.tta:
        tta_probs, _ = predict(FlipTTA(model, cfg.eval.tta), loader, device)
        ev = cfg.eval
        tta = decided_metrics(targets, tta_probs, classes, ev.decision, ev.target_precision)
        metrics |= tta_metrics(tta)
    if prepared.judged_side == "test":
        metrics["test"] = _test_metrics(cfg, prepared, model, device, metrics, tta)
    metrics_path = run_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=1))
    plots = {
        "confusion": str(confusion_png(metrics["confusion"], classes, run_dir / "plots" / "confusion.png")),
        "curves": str(curves_png(train.history, run_dir / "plots" / "curves.png")),
    }
    return Evaluation(metrics, str(metrics_path), plots)


def as_shipped(evaluation: Evaluation, metrics: dict[str, Any], classes: list[str], measured_on: str) -> Evaluation:
    """`evaluation` with the metrics of the file that ships in its place and the checkpoint's kept under
    `checkpoint`: metrics.json and the confusion matrix are rewritten, the curves stay the training's."""
    metrics = metrics | {"checkpoint": evaluation.metrics}
    Path(evaluation.metrics_path).write_text(json.dumps(metrics, indent=1))
    confusion_png(metrics["confusion"], classes, Path(evaluation.plots["confusion"]))
    return replace(evaluation, metrics=metrics, measured_on=measured_on)
