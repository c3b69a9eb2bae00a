"""Small networks for small images, registered in timm's registry so `model.name` finds them like any
timm model: `vf_cnn_small` (the CIFAR-10 seed project's baseline CNN) and `resnet20_cifar` (He et al.
2016's CIFAR ResNet-20: 3x3 stem at stride 1, three stages of three basic blocks, 16/32/64 channels).

Both follow timm's interface (forward_features / forward_head(pre_logits) / num_features), so pooled
embeddings and the rest of the pipeline work unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

_CFG = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}  # CIFAR-10 statistics


class _TimmLike(nn.Module):
    """Pooling + dropout + linear head shared by both networks."""

    def __init__(self, num_features: int, num_classes: int, drop_rate: float):
        super().__init__()
        self.num_features, self.num_classes, self.drop_rate = num_features, num_classes, drop_rate
        self.head = nn.Linear(num_features, num_classes)
        self.pretrained_cfg = dict(_CFG)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.dropout(F.adaptive_avg_pool2d(x, 1).flatten(1), self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(_TimmLike):
    """Three conv-conv-pool blocks (32/64/128): the kind of baseline a first CIFAR project starts from."""

    def __init__(self, in_chans: int = 3, num_classes: int = 10, drop_rate: float = 0.0):
        super().__init__(128, num_classes, drop_rate)
        blocks, cin = [], in_chans
        for cout in (32, 64, 128):
            blocks += [_conv_bn(cin, cout), _conv_bn(cout, cout), nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(cin, cout, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        )
        self.short = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.short(x))


class CifarResNet(_TimmLike):
    def __init__(self, depth: int = 20, in_chans: int = 3, num_classes: int = 10, drop_rate: float = 0.0):
        super().__init__(64, num_classes, drop_rate)
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        layers, cin = [_conv_bn(in_chans, 16)], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(_BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.features = nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _build(cls: type[_TimmLike], pretrained: bool, **kwargs) -> _TimmLike:
    if pretrained:
        raise ValueError(f"{cls.__name__} has no pretrained weights; set model.pretrained=false")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return cls(**kwargs)


@register_model
def vf_cnn_small(pretrained: bool = False, **kwargs) -> SmallCNN:
    return _build(SmallCNN, pretrained, **kwargs)


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    return _build(CifarResNet, pretrained, depth=20, **kwargs)
