"""Segmenter training (layout image_mask): random crops of the pages, each epoch validated on whole pages.

    trained = train_segmenter(cfg, prepared, run_dir)       # random crops (data.crop_size), foreground-biased

Pages are never resized: training sees crops of them, evaluation and serving see them whole (ml.core.tiling);
ml.evaluation.segmenter and ml.export.segmenter take it from there, and ml.training.step picks it by kind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ml.config.run import RunConfig
from ml.core.tiling import torch_predictor
from ml.data.prepare import PreparedData
from ml.training.datasets import CropDataset
from ml.training.loop import TrainResult, fit
from ml.training.losses import SegLoss
from ml.training.pages import load_pages, score_pages


def train_segmenter(
    cfg: RunConfig, prepared: PreparedData, run_dir: Path, on_epoch: Callable[[dict[str, float]], None] | None = None
) -> TrainResult:
    """ml.training.loop.fit on random crops; each epoch is validated on the whole validation pages (raw metrics)."""
    train_ds = CropDataset([(p.image, p.mask) for p in load_pages(cfg, prepared, "train")], cfg)
    val_pages = load_pages(cfg, prepared, "val")

    def validate(model: nn.Module, device: torch.device, amp: bool) -> dict[str, float]:
        metrics, _, _ = score_pages(cfg, val_pages, torch_predictor(model, device, amp), post=False)
        return {k: metrics[k] for k in ("loss", "f1", "iou", "edge_iou")}

    criterion = SegLoss(cfg.train.loss, cfg.train.focal_gamma)
    return fit(cfg, train_ds, None, prepared.classes, run_dir, on_epoch, (criterion, validate))
