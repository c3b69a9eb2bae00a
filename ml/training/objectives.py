"""What a classifier trains against: its loss (class weights, label smoothing, the map head's mask term), its
class sampler, MixUp, and validation by accuracy / macro-F1 / AUROC; ml.training.loop steps it."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from ml.config.training import TrainConfig
from ml.core.metrics import classification_metrics, predict
from ml.training.datasets import make_loader
from ml.training.losses import MapLoss, SegLoss, classifier_loss
from ml.training.mixup import MixUp
from ml.training.samplers import class_weights, weighted_sampler

# (model, device, amp) -> validation metrics by name; must include train.monitor. Logged as val_<name>.
Validate = Callable[[nn.Module, torch.device, bool], dict[str, float]]


def classifier_objective(
    tc: TrainConfig, head: str, train_ds: Dataset, val_ds: Dataset, classes: list[str], device: torch.device
) -> tuple[nn.Module, Sampler | None, Validate, MixUp | None]:
    """train.classifier_loss (class weights, label smoothing; with model.head=map plus the mask term), the class
    sampler, validation by accuracy / macro-F1 / AUROC, and MixUp (train.mixup > 0)."""
    targets = np.asarray(train_ds.targets)
    mode = tc.class_weights
    weight = None if mode == "none" else class_weights(targets, len(classes), mode).to(device)
    criterion = classifier_loss(tc, weight).to(device)
    if head == "map":
        criterion = MapLoss(criterion, SegLoss(tc.loss, tc.focal_gamma), tc.mask_loss)
    mix = MixUp(tc.mixup, len(classes), tc.mixup_prob, tc.seed) if tc.mixup > 0 else None
    sampler = weighted_sampler(targets, len(classes), tc.seed) if tc.sampler == "weighted" else None
    val_loader = make_loader(val_ds, tc.batch_size, False, tc.num_workers, tc.seed)

    def validate(model: nn.Module, device: torch.device, amp: bool) -> dict[str, float]:
        probs, val_targets = predict(model, val_loader, device, amp)
        m = classification_metrics(val_targets, probs, classes)
        auroc = math.nan if m["auroc"] is None else m["auroc"]  # None: the split lacks a class
        return {**{k: m[k] for k in ("loss", "accuracy", "macro_f1")}, "auroc": auroc}

    return criterion, sampler, validate, mix
