"""Class balance in training: 'balanced' class weights for the loss, and the sampler that draws classes evenly.

weight = class_weights(targets, num_classes)             # train.class_weights=balanced
sampler = weighted_sampler(targets, num_classes, seed)   # train.sampler=weighted
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from ml.training import ranks


def class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """'balanced' weights n / (k * count_c): a class half as frequent counts twice as much."""
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    counts[counts == 0] = 1.0
    return torch.tensor(len(targets) / (num_classes * counts), dtype=torch.float32)


def weighted_sampler(targets: np.ndarray, num_classes: int, seed: int) -> WeightedRandomSampler:
    """train.sampler=weighted: each sample drawn with its class's balanced weight, so every class comes up
    about equally often (with replacement; an epoch keeps its length, shared out over the ranks)."""
    weights = class_weights(targets, num_classes)[torch.as_tensor(targets, dtype=torch.long)]
    gen = torch.Generator().manual_seed(seed)
    n = ranks.shard_size(len(targets))
    return WeightedRandomSampler(weights.double(), num_samples=n, replacement=True, generator=gen)
