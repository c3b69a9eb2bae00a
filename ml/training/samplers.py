"""Class balance in training: class weights for the loss, and the sampler that draws classes evenly.

weight = class_weights(targets, num_classes, "sqrt")     # train.class_weights=balanced|sqrt|effective
sampler = weighted_sampler(targets, num_classes, seed)   # train.sampler=weighted
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from ml.training import ranks


def class_weights(targets: np.ndarray, num_classes: int, mode: str = "balanced") -> torch.Tensor:
    """Per-class loss weights, normalised so that the average sample weighs 1.

    balanced: n / (k * count_c), a class half as frequent counts twice as much (doodle-12: up to 30x, which
    over-predicts the small classes); sqrt: its square root (~5.5x there); effective: Cui et al. 2019's
    (1 - beta) / (1 - beta^count_c), beta 0.999: counts past ~1,000 images add little (~11x there)."""
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    counts[counts == 0] = 1.0
    if mode == "effective":
        raw = (1.0 - 0.999) / (1.0 - 0.999**counts)
    else:
        raw = len(targets) / (num_classes * counts)
        raw = np.sqrt(raw) if mode == "sqrt" else raw
    return torch.tensor(raw * len(targets) / (raw * counts).sum(), dtype=torch.float32)


def weighted_sampler(targets: np.ndarray, num_classes: int, seed: int) -> WeightedRandomSampler:
    """train.sampler=weighted: each sample drawn with its class's balanced weight, so every class comes up
    about equally often (with replacement; an epoch keeps its length, shared out over the ranks)."""
    weights = class_weights(targets, num_classes)[torch.as_tensor(targets, dtype=torch.long)]
    gen = torch.Generator().manual_seed(seed)
    n = ranks.shard_size(len(targets))
    return WeightedRandomSampler(weights.double(), num_samples=n, replacement=True, generator=gen)
