"""Test-time augmentation with flips: class probabilities averaged over the image and its flipped views.

    model = FlipTTA(classifier, ["hflip", "vflip"])      # eval.tta; softmax(model(x)) = mean of the 3 views' probs
    metrics |= tta_metrics(metrics_of_tta_probs)          # accuracy_tta, macro_f1_tta, ... beside the plain ones

The views run as one batch (N x views images). The output is log(mean probability) per class, so anything that
takes logits (ml.core.metrics.predict's softmax, an ONNX consumer of `logits`) gets the averaged probabilities.
ml.export.onnx bakes the same averaging into the graph (export.tta).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ml.config.evaluation import CLASSIFIER_METRICS

FLIP_DIMS = {"hflip": -1, "vflip": -2}  # N x C x H x W: hflip mirrors left-right (W), vflip top-bottom (H)


def flip_views(x: torch.Tensor, flips: list[str] | tuple[str, ...]) -> torch.Tensor:
    """The batch followed by each flipped copy: (1 + len(flips)) * N images."""
    return torch.cat([x, *(x.flip(FLIP_DIMS[f]) for f in flips)])


def mean_probs_logits(logits: torch.Tensor, views: int) -> torch.Tensor:
    """(views * N) x K logits (ml.evaluation.tta.flip_views order) -> N x K log of the views' mean softmax."""
    log_p = torch.log_softmax(logits.float(), dim=1).unflatten(0, (views, -1))
    return torch.logsumexp(log_p, dim=0) - math.log(views)


class FlipTTA(nn.Module):
    """A classifier whose output is the log of its mean class probabilities over the image and its flips."""

    def __init__(self, model: nn.Module, flips: list[str] | tuple[str, ...]):
        super().__init__()
        unknown = sorted(set(flips) - set(FLIP_DIMS))
        if unknown or not flips:
            raise ValueError(f"tta flips {list(flips)}: one or more of {list(FLIP_DIMS)}")
        self.model, self.flips = model, tuple(flips)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mean_probs_logits(self.model(flip_views(x, self.flips)), 1 + len(self.flips))


def tta_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline metrics of TTA probabilities (scored like the plain ones) as `<metric>_tta`, to sit beside
    them in the evaluation (the report shows both)."""
    return {f"{name}_tta": metrics[name] for name in CLASSIFIER_METRICS}
