"""Classifier training: the split's images decoded and resized once (cached by split id), then fit.

    trained = train_classifier(cfg, prepared, run_dir)   # TrainResult: checkpoints, history; paths and numbers only

ml.evaluation.classifier and ml.export.classifier reuse `load_split` and `datasets`, so every stage sees the
same resized images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd

from ml.config.run import RunConfig
from ml.core.files import atomic_write
from ml.data.errors import DatasetError
from ml.data.masks import load_mask
from ml.data.prepare import PreparedData
from ml.training.augment import build_transforms
from ml.training.batch_augment import BatchImages
from ml.training.datasets import CropDataset, ImageDataset, load_resized
from ml.training.loop import TrainResult, fit


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


def datasets(cfg: RunConfig, prepared: PreparedData) -> tuple[ImageDataset | BatchImages | CropDataset, ImageDataset]:
    """Training and validation sets. model.head=map trains on crops of the resized images and their masks and
    validates on the whole resized images; train.augment.batch trains on batch-wise augmented tensors."""
    val = ImageDataset(*load_split(cfg, prepared, "val"))
    images, targets = load_split(cfg, prepared, "train")
    if cfg.model.head == "map":
        pairs = list(zip(images, load_masks(cfg, prepared, "train"), strict=True))
        return CropDataset(pairs, cfg, labels=targets), val
    if cfg.train.augment.batch:
        return BatchImages(images, targets, cfg.train.augment), val
    augment = build_transforms(cfg.train.augment, cfg.data.image_size, True, cfg.train.seed)
    return ImageDataset(images, targets, augment), val


def train_classifier(
    cfg: RunConfig, prepared: PreparedData, run_dir: Path, on_epoch: Callable[[dict[str, float]], None] | None = None
) -> TrainResult:
    train_ds, val_ds = datasets(cfg, prepared)
    return fit(cfg, train_ds, val_ds, prepared.classes, run_dir, on_epoch)
