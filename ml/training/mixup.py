"""MixUp (Zhang et al. 2018): train on convex combinations of image pairs and of their one-hot targets.

    mix = MixUp(alpha=0.2, num_classes=4, prob=1.0, seed=0)     # train.mixup, train.mixup_prob
    x, soft = mix(x, y)              # inside the training loop, after the batch is on the device

Each batch is mixed with a shuffled copy of itself using one weight lam ~ Beta(alpha, alpha); the targets become
class distributions, which both classifier losses (ml.training.losses) take. Batches left unmixed (mixup_prob < 1) get
one-hot targets, so every batch goes through the loss the same way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class MixUp:
    """Batch -> (mixed images, soft targets); seeded, so a run mixes the same way each time."""

    def __init__(self, alpha: float, num_classes: int, prob: float = 1.0, seed: int = 0):
        if alpha <= 0:
            raise ValueError(f"MixUp alpha must be > 0, got {alpha}")
        self.alpha, self.num_classes, self.prob = alpha, num_classes, prob
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(x, soft targets, *masks): masks (model.head=map) are mixed with the same weight and pairs."""
        targets = F.one_hot(y, self.num_classes).to(x.dtype)
        if self.rng.random() >= self.prob:
            return x, targets, *masks
        lam = float(self.rng.beta(self.alpha, self.alpha))
        perm = torch.as_tensor(self.rng.permutation(len(x)), device=x.device)
        mixed = [lam * t + (1 - lam) * t[perm] for t in (x, targets, *masks)]
        return tuple(mixed)
