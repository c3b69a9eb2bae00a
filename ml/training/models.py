"""One factory for every network: a timm classifier (pooled head, or a logit map: model.head=map), or a U-Net on
a timm encoder (model.task=segment)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ml.config.training import ModelConfig
from ml.core.torchvision_shim import ensure_torchvision

ensure_torchvision()
import segmentation_models_pytorch as smp  # noqa: E402  (imports timm and torchvision too)
import timm  # noqa: E402  (timm imports torchvision, which needs the shim on CPU torch)

import ml.training.small_nets  # noqa: E402,F401  (registers the small-image networks in timm's registry)


class ImageClassifier(nn.Module):
    """Backbone plus its input normalisation, so the exported graph takes plain [0,1] pixels."""

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)

    def logits_and_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and the pooled features before the classifier (what drift monitoring compares), one pass."""
        if not hasattr(self.backbone, "forward_head"):
            return self(x), None
        features = self.backbone.forward_features((x - self.mean) / self.std)
        head = self.backbone.forward_head
        return head(features), head(features, pre_logits=True).flatten(1)


class ImageSegmenter(ImageClassifier):
    """The same [0,1]-pixel input; the output is per-pixel logits N x K x H x W."""


class MapClassifier(ImageClassifier):
    """A binary classifier that looks for the positive class anywhere (model.head=map): a 1x1 conv over the last
    two encoder stages (the deepest upsampled to the other's stride) gives a logit map, and the image's
    positive logit is the map's maximum, so a defect a few pixels wide is not averaged away by a pooled head.

    The output is the usual N x 2 logits [0, max], so evaluation, TTA, export and scoring treat it as any
    classifier. In training mode forward also returns the map, which train.mask_loss fits to the masks.
    """

    def __init__(self, encoder: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__(encoder, mean, std)
        self.head = nn.Conv2d(sum(encoder.feature_info.channels()[-2:]), 1, kernel_size=1)

    def _map_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        *_, mid, deep = self.backbone((x - self.mean) / self.std)
        up = F.interpolate(deep, size=mid.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([mid, up], dim=1)), deep

    @staticmethod
    def _logits(logit_map: torch.Tensor) -> torch.Tensor:
        score = logit_map.flatten(1).amax(dim=1, keepdim=True)
        return torch.cat([torch.zeros_like(score), score], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logit_map, _ = self._map_and_features(x)
        logits = self._logits(logit_map)
        return (logits, logit_map) if self.training else logits

    def logits_and_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit_map, deep = self._map_and_features(x)
        return self._logits(logit_map), deep.mean(dim=(2, 3))


def build_model(cfg: ModelConfig, in_chans: int, num_classes: int) -> ImageClassifier:
    """A timm classifier by name, or for task=segment a U-Net whose logits are num_classes x H x W (1: binary).
    (ModelConfig has checked the name against timm's registry and ml.training.small_nets.)
    """
    if cfg.task == "segment":
        return _unet(cfg, in_chans, num_classes)
    if cfg.head == "map":
        encoder = timm.create_model(cfg.name, pretrained=cfg.pretrained, in_chans=in_chans, features_only=True)
        return MapClassifier(encoder, *_channel_stats(encoder.pretrained_cfg, in_chans))
    backbone = timm.create_model(
        cfg.name, pretrained=cfg.pretrained, in_chans=in_chans, num_classes=num_classes, drop_rate=cfg.drop_rate
    )
    mean, std = _channel_stats(backbone.pretrained_cfg, in_chans)
    return ImageClassifier(backbone, mean, std)


def _unet(cfg: ModelConfig, in_chans: int, num_classes: int) -> ImageClassifier:
    """smp's U-Net on the timm encoder `cfg.name` ("tu-" routes smp to timm); sides must be multiples of 32."""
    net = smp.Unet(
        encoder_name=f"tu-{cfg.name}",
        encoder_weights="imagenet" if cfg.pretrained else None,
        encoder_depth=len(cfg.decoder_channels),
        decoder_channels=cfg.decoder_channels,
        in_channels=in_chans,
        classes=num_classes,
    )
    pretrained_cfg = timm.get_pretrained_cfg(cfg.name)
    mean, std = _channel_stats(pretrained_cfg.to_dict() if pretrained_cfg else {}, in_chans)
    return ImageSegmenter(net, mean, std)


def _channel_stats(pretrained_cfg: dict, in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The backbone's own mean/std (ImageNet for most), averaged when the input is grayscale."""
    mean = tuple(pretrained_cfg.get("mean", (0.5, 0.5, 0.5)))
    std = tuple(pretrained_cfg.get("std", (0.25, 0.25, 0.25)))
    if in_chans != len(mean):
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    return mean, std


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA > MPS > CPU when `auto`; an explicit choice that is not available is an error, not a fallback."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[requested]:
        raise RuntimeError(f"train.device={requested} requested but no {requested} device is available")
    return torch.device(requested)
