"""Training losses on logits, computed in float32 (also under AMP).

Classifiers (train.classifier_loss): cross-entropy or focal over N x K logits, against class indices or
class distributions (MixUp's soft targets):

    criterion = classifier_loss(cfg.train, weight)                    # ce | focal
    loss = criterion(logits, targets)

A classifier with model.head=map adds train.mask_loss x the segmenter terms on its logit map (MapLoss).

Segmenters (train.loss): terms on N x 1 x H x W logits against binary masks, summed with weights from config:

    criterion = SegLoss({"bce": 1.0, "dice": 1.0, "edge": 0.5})
    loss = criterion(logits, masks)

Thin strokes are a few percent of the pixels: BCE alone settles for "all background"; dice and focal weigh
the foreground, and the edge term (Sobel magnitude of the prediction vs the mask's) rewards sharp outlines.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ml.config.training import TrainConfig

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft dice per image, averaged; `smooth` keeps empty masks finite (0 when both are empty)."""
    probs = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    inter = (probs * target).sum(1)
    return (1 - (2 * inter + smooth) / (probs.sum(1) + target.sum(1) + smooth)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """BCE scaled by (1 - p_true)^gamma: pixels already right count little (Lin et al. 2017)."""
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = torch.exp(-bce)
    return ((1 - p_true) ** gamma * bce).mean()


def sobel_magnitude(maps: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of N x 1 x H x W maps (borders replicated, so a border is not an edge)."""
    kx = _SOBEL_X.to(maps.device, torch.float32).view(1, 1, 3, 3)
    padded = F.pad(maps.float(), (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(2, 3))
    return torch.sqrt(gx * gx + gy * gy + 1e-6)  # eps: a finite gradient where the map is flat


def edge_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |Sobel(probs) - Sobel(mask)|: zero when the maps are equal, larger the more their outlines differ."""
    return (sobel_magnitude(probs) - sobel_magnitude(target)).abs().mean()


class SegLoss(nn.Module):
    """sum(weight * loss) over the named terms: bce, dice, focal, edge (names validated by TrainConfig)."""

    def __init__(self, weights: dict[str, float], focal_gamma: float = 2.0):
        super().__init__()
        self.weights, self.focal_gamma = {k: w for k, w in weights.items() if w}, focal_gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = {
            "bce": lambda: F.binary_cross_entropy_with_logits(logits.float(), target.float()),
            "dice": lambda: dice_loss(logits, target),
            "focal": lambda: focal_loss(logits, target, self.focal_gamma),
            "edge": lambda: edge_loss(torch.sigmoid(logits.float()), target),
        }
        return sum(w * terms[name]() for name, w in self.weights.items())


class FocalLoss(nn.Module):
    """Multi-class focal loss: cross-entropy with each class term scaled by (1 - p)^gamma, so images the model
    already gets right count little and the hard ones dominate (Lin et al. 2017); gamma=0 is cross-entropy.

    `weight` (per class) is the alpha factor; the batch mean is plain (not normalised by the weights).
    Targets are class indices or rows of class probabilities (MixUp); label smoothing mixes them with uniform.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        k = log_p.shape[1]
        target = F.one_hot(target, k).float() if target.dim() == 1 else target.float()
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / k
        terms = -((1 - log_p.exp()) ** self.gamma) * log_p  # N x K
        if self.weight is not None:
            terms = terms * self.weight
        return (target * terms).sum(dim=1).mean()


def classifier_loss(tc: TrainConfig, weight: torch.Tensor | None = None) -> nn.Module:
    """train.classifier_loss with the class weights (train.class_weights) and train.label_smoothing."""
    if tc.classifier_loss == "focal":
        return FocalLoss(tc.focal_gamma, weight, tc.label_smoothing)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=tc.label_smoothing)


class MapLoss(nn.Module):
    """model.head=map: the class loss on the image logits plus `weight` x the mask loss (train.loss terms) of the
    logit map against the crop's mask max-pooled to the map's size (a cell is positive if any pixel in it is).
    Without masks (or in eval mode, where the model returns logits only) it is the class loss alone."""

    def __init__(self, class_loss: nn.Module, mask_loss: SegLoss, weight: float):
        super().__init__()
        self.class_loss, self.mask_loss, self.weight = class_loss, mask_loss, weight

    def forward(
        self,
        output: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logits, logit_map = output if isinstance(output, tuple) else (output, None)
        loss = self.class_loss(logits, target)
        if logit_map is None or mask is None or not self.weight:
            return loss
        return loss + self.weight * self.mask_loss(logit_map, F.adaptive_max_pool2d(mask.float(), logit_map.shape[-2:]))
