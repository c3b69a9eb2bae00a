"""Classification steps over a prepared split: train, evaluate (metrics + plots), export to ONNX.

Each step takes the run's config, the prepared split and a run directory, and returns a small record,
so the Prefect tasks that wrap them pass paths and numbers, never tensors.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import torch

from ml.config.run import RunConfig
from ml.core.files import atomic_write
from ml.core.metrics import accuracy_by, decided_metrics, decision_threshold, predict
from ml.core.thresholds import decide
from ml.data.layouts import DatasetError
from ml.data.masks import load_mask
from ml.data.prepare import PreparedData
from ml.evaluation.gate import scalar_metrics
from ml.evaluation.plots import confusion_png, curves_png
from ml.evaluation.tta import FlipTTA, tta_metrics
from ml.export.onnx import ExportResult, export_checked
from ml.training.augment import build_transforms
from ml.training.datasets import CropDataset, ImageDataset, load_resized, make_loader
from ml.training.loop import TrainResult, fit, load_trained
from ml.training.models import pick_device


def load_split(cfg: RunConfig, prepared: PreparedData, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Decoded, resized uint8 images and class indices of one split, cached beside split.csv (by its hash: a
    retried run that re-validated changed data does not read the old images)."""
    d = cfg.data
    cache = Path(prepared.split_csv).with_name(f"{side}_{d.image_size}px_{d.channels}ch_{prepared.split_id}.npz")
    if cache.exists():
        with np.load(cache) as z:
            return z["images"], z["targets"]
    frame = pd.read_csv(prepared.split_csv, keep_default_na=False)
    frame = frame[frame["split"] == side]
    index = {c: i for i, c in enumerate(prepared.classes)}
    images = load_resized(frame, d.channels, d.image_size)
    targets = frame["label"].map(index).to_numpy(np.int64)
    atomic_write(cache, lambda f: np.savez(f, images=images, targets=targets))  # ranks may write it at once
    return images, targets


def load_masks(cfg: RunConfig, prepared: PreparedData, side: str) -> np.ndarray:
    """Masks of one split resized like its images (N x S x S in {0, 1}; zeros where an image has none), cached.
    model.head=map learns where the positive class is from them (<root>/masks/<id>.png)."""
    size = cfg.data.image_size
    cache = Path(prepared.split_csv).with_name(f"{side}_{size}px_masks_{prepared.split_id}.npz")
    if cache.exists():
        with np.load(cache) as z:
            return z["masks"]
    frame = pd.read_csv(prepared.split_csv, keep_default_na=False)
    frame = frame[frame["split"] == side]
    paths = frame["mask"] if "mask" in frame else pd.Series([""] * len(frame))
    if cfg.train.mask_loss and not paths.astype(bool).any():
        raise DatasetError(f"{prepared.root}: train.mask_loss needs masks as <root>/masks/<id>.png; none found")
    resize = A.Resize(size, size, interpolation=cv2.INTER_NEAREST)
    empty = np.zeros((size, size), np.uint8)
    masks = np.stack([resize(image=load_mask(p))["image"] if p else empty for p in paths])
    atomic_write(cache, lambda f: np.savez(f, masks=masks))
    return masks


def datasets(cfg: RunConfig, prepared: PreparedData) -> tuple[ImageDataset | CropDataset, ImageDataset]:
    """Training and validation sets. model.head=map trains on crops of the resized images and their masks and
    validates on the whole resized images."""
    val = ImageDataset(*load_split(cfg, prepared, "val"))
    images, targets = load_split(cfg, prepared, "train")
    if cfg.model.head == "map":
        pairs = list(zip(images, load_masks(cfg, prepared, "train"), strict=True))
        return CropDataset(pairs, cfg, labels=targets), val
    augment = build_transforms(cfg.train.augment, cfg.data.image_size, True, cfg.train.seed)
    return ImageDataset(images, targets, augment), val


def train_classifier(cfg: RunConfig, prepared: PreparedData, run_dir: Path) -> TrainResult:
    train_ds, val_ds = datasets(cfg, prepared)
    return fit(cfg, train_ds, val_ds, prepared.classes, run_dir)


@dataclass
class Evaluation:
    metrics: dict  # see ml.core.metrics.classification_metrics
    metrics_path: str
    plots: dict[str, str]  # name -> PNG path
    measured_on: str = ""  # what scored `metrics` when not the best checkpoint (ml.export.steps.shipped_evaluation)

    @property
    def threshold(self) -> float | None:
        """A binary model's decision threshold chosen on the validation split (eval.decision); None: argmax."""
        return decision_threshold(self.metrics)

    def scalars(self) -> dict[str, float | None]:
        return scalar_metrics(self.metrics)

    def to_dict(self) -> dict:
        return asdict(self)


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


def evaluate_classifier(cfg: RunConfig, prepared: PreparedData, train: TrainResult, run_dir: Path) -> Evaluation:
    """Best checkpoint on the validation split: metrics JSON, confusion matrix and training curves PNGs.
    With eval.tta the flip-averaged metrics sit beside the plain ones as `<metric>_tta` (did TTA help?)."""
    device = pick_device(cfg.train.device)
    model, classes = load_trained(Path(train.best_checkpoint), cfg, device)
    _, val_ds = datasets(cfg, prepared)
    loader = make_loader(val_ds, cfg.train.batch_size, False, cfg.train.num_workers, cfg.train.seed)
    probs, targets = predict(model, loader, device)
    metrics = decided_on_split(cfg, prepared, "val", targets, probs)
    if cfg.eval.tta:
        tta_probs, _ = predict(FlipTTA(model, cfg.eval.tta), loader, device)
        ev = cfg.eval
        metrics |= tta_metrics(decided_metrics(targets, tta_probs, classes, ev.decision, ev.target_precision))
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


def export_classifier(cfg: RunConfig, prepared: PreparedData, train: TrainResult, run_dir: Path) -> ExportResult:
    """ONNX of the best checkpoint (with export.tta: eval.tta's flip averaging inside); parity checked on a real
    validation batch."""
    model, _ = load_trained(Path(train.best_checkpoint), cfg, "cpu")
    _, val_ds = datasets(cfg, prepared)
    n = min(cfg.export.parity_batch, len(val_ds))
    batch = torch.stack([val_ds[i][0] for i in range(n)])
    ex = cfg.export
    tta = cfg.eval.tta if ex.tta else []
    return export_checked(model, batch, run_dir / "model.onnx", ex.opset, ex.parity_tolerance, tta)
