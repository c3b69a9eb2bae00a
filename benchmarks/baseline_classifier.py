"""The plain PyTorch classifier script beside a classifier preset (benchmarks.baselines runs both).

Tensors in memory, batch-wise flips and small shifts, a network for the image size (a 3-block CNN up to 28 px,
a half-width ResNet-9 above), AdamW, label smoothing 0.1, one-cycle over the wall clock. The preset trains
through train_classifier on the same decoded images (ml.training.classifier.load_split); both are scored on
TEST with the project's classification_metrics.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.plain_parts import conv_bn, one_cycle, set_lr
from ml.config.run import RunConfig
from ml.core.metrics import classification_metrics, predict
from ml.data.prepare import PreparedData
from ml.training.classifier import load_split, train_classifier
from ml.training.datasets import ImageDataset
from ml.training.loop import load_trained

HEADLINE = ("accuracy", "macro_f1", "auroc")


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(c, c), conv_bn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def baseline_net(channels: int, classes: int, size: int) -> nn.Module:
    """3-block CNN for doodle-sized images; half-width ResNet-9 (airbench family) for CIFAR-sized and up."""
    head = [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
    if size <= 28:
        return nn.Sequential(conv_bn(channels, 32, True), conv_bn(32, 64, True), conv_bn(64, 128, True), *head,
                             nn.Linear(128, classes))  # fmt: skip
    stem = [nn.AvgPool2d(size // 32)] if size >= 64 else []  # keep the net's cost at CIFAR scale
    return nn.Sequential(
        *stem, conv_bn(channels, 32), conv_bn(32, 64, True), Residual(64), conv_bn(64, 128, True),
        conv_bn(128, 256, True), Residual(256), *head, nn.Linear(256, classes),
    )  # fmt: skip


def augment(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Batch-wise horizontal flip (half the batch) and a random shift of up to `shift` px (reflect-padded crop)."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = nn.functional.pad(x, (shift,) * 4, mode="reflect")
    dx, dy = torch.randint(0, 2 * shift + 1, (2, len(x)), generator=gen).tolist()
    h, w = x.shape[2:]
    return torch.stack([padded[i, :, b : b + h, a : a + w] for i, (a, b) in enumerate(zip(dx, dy, strict=True))])


def to_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)


def train_baseline(images: np.ndarray, targets: np.ndarray, classes: int, budget_s: float, seed: int = 0) -> dict:
    """The plain script: one-cycle learning rate as a function of elapsed wall time; stops when the budget is spent."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = to_float(images), torch.from_numpy(targets)
    model = baseline_net(x.shape[1], classes, x.shape[2])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    shift, batch, epochs, start = max(2, x.shape[2] // 8), 256, 0, time.perf_counter()
    while time.perf_counter() - start < budget_s:
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            set_lr(opt, one_cycle(2e-3, (time.perf_counter() - start) / budget_s))
            opt.zero_grad(set_to_none=True)
            loss_fn(model(augment(x[idx], shift, gen)), y[idx]).backward()
            opt.step()
        epochs += 1
    elapsed = time.perf_counter() - start
    return {"model": model.eval(), "epochs": epochs, "seconds": elapsed, "images_per_s": len(x) * epochs / elapsed}


@torch.no_grad()
def baseline_probs(model: nn.Module, images: np.ndarray) -> np.ndarray:
    x = to_float(images)
    return torch.cat([model(b).softmax(1) for b in x.split(512)]).double().numpy()


def compare_classifier(cfg: RunConfig, prepared: PreparedData, budget_min: float, work: Path) -> dict:
    """Both sides on cfg's split at one budget; metrics on the test split."""
    images, targets = load_split(cfg, prepared, "train")
    test_x, test_y = load_split(cfg, prepared, "test")
    trained = train_classifier(cfg, prepared, work / "run")
    model, classes = load_trained(Path(trained.best_checkpoint), cfg)
    probs, _ = predict(model, DataLoader(ImageDataset(test_x, test_y), batch_size=256), torch.device("cpu"))
    base = train_baseline(images, targets, len(classes), budget_min * 60, cfg.train.seed)
    side = {
        "preset": (probs, trained.epochs_run, trained.seconds, len(targets) * trained.epochs_run / trained.seconds),
        "baseline": (baseline_probs(base["model"], test_x), base["epochs"], base["seconds"], base["images_per_s"]),
    }
    row = {"kind": "classify", "name": cfg.name, "budget_min": budget_min}
    row |= {"train_images": len(targets), "test_images": len(test_y)}
    for name, (p, epochs, seconds, ips) in side.items():
        m = classification_metrics(test_y, p, classes)
        row[name] = {
            **{k: round(m[k], 4) for k in HEADLINE if m.get(k) is not None},
            "epochs": epochs,
            "train_s": round(seconds, 1),
            "images_per_s": round(ips, 1),
        }
    return row
