"""What the plain PyTorch baselines (benchmarks.baseline_classifier, benchmarks.baseline_segmenter) share: the
conv-BN-ReLU block and a one-cycle learning rate over the wall clock."""

from __future__ import annotations

import math

from torch import nn


def conv_bn(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


def one_cycle(peak: float, frac: float) -> float:
    """The rate at `frac` of the budget: linear warm-up over a quarter, cosine down to (almost) zero."""
    frac = min(frac, 1.0)
    if frac < 0.25:
        return max(peak * frac / 0.25, 1e-6)
    return max(peak * 0.5 * (1 + math.cos(math.pi * (frac - 0.25) / 0.75)), 1e-6)


def set_lr(opt, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr
