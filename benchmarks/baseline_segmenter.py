"""The plain PyTorch segmentation script beside a segmenter preset (strokes; benchmarks.baselines runs both).

A small U-Net (4 levels, 16-128 channels) on random crops (data.crop_size) cut from the training pages held in
memory, horizontal flips, BCE + Dice, AdamW, one-cycle over the wall clock, no validation (it keeps its last
weights). The preset trains through train_segmenter; both are scored on the preset's TEST pages, whole and tiled
(eval.tile, eval.overlap), by the project's score_pages, so F1 and IoU are the same code for both.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.plain_parts import conv_bn, one_cycle, set_lr
from ml.config.run import RunConfig
from ml.core.tiling import torch_predictor
from ml.data.prepare import PreparedData
from ml.training.loop import load_trained
from ml.training.pages import Page, load_pages, score_pages
from ml.training.segmenter import train_segmenter

HEADLINE = ("f1", "iou", "edge_iou", "f1_post")


class UNet(nn.Module):
    """Double conv-BN-ReLU per level, max-pool down, bilinear up with skip connections; one logit per pixel.
    Takes [0, 1] pixels (what score_pages' tiles are), sides a multiple of 8."""

    def __init__(self, channels: int, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(conv_bn(cin, cout), conv_bn(cout, cout))

        ins = (channels, *widths[:-1])
        self.down = nn.ModuleList(block(i, o) for i, o in zip(ins, widths, strict=True))
        self.up = nn.ModuleList(block(hi + lo, lo) for hi, lo in zip(widths[:0:-1], widths[-2::-1], strict=True))
        self.out = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, x = [], x - 0.5
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, skips[-2::-1], strict=True):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[2:], mode="bilinear"), skip], 1))
        return self.out(x)


def random_crops(pages: list[Page], size: int, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random crops (image in [0, 1], mask) of random pages, half of them flipped left-right."""
    xs, ys = [], []
    for k in rng.integers(len(pages), size=n):
        page = pages[k]
        top, left = (rng.integers(s - size + 1) for s in page.mask.shape)
        img, mask = page.image[top : top + size, left : left + size], page.mask[top : top + size, left : left + size]
        if rng.random() < 0.5:
            img, mask = img[:, ::-1], mask[:, ::-1]
        xs.append(img.transpose(2, 0, 1))
        ys.append(mask[None])
    return torch.from_numpy(np.stack(xs)).float().div_(255.0), torch.from_numpy(np.stack(ys)).float()


def padded(page: Page, size: int) -> Page:
    """A page at least `size` on each side (mirrored), so every crop fits."""
    pad = [(0, max(0, size - s)) for s in page.mask.shape]
    return Page(page.id, np.pad(page.image, [*pad, (0, 0)], mode="symmetric"), np.pad(page.mask, pad, mode="symmetric"))


def bce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probs = logits.sigmoid()
    dice = 1 - (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice


def train_baseline(pages: list[Page], size: int, budget_s: float, batch: int = 8, seed: int = 0) -> dict:
    """The plain script: crops from the pages in memory until the budget is spent, one-cycle over the wall clock."""
    torch.manual_seed(seed)
    rng, pages = np.random.default_rng(seed), [padded(p, size) for p in pages]
    model = UNet(pages[0].image.shape[2])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    crops, start = 0, time.perf_counter()
    model.train()
    while time.perf_counter() - start < budget_s:
        set_lr(opt, one_cycle(3e-3, (time.perf_counter() - start) / budget_s))
        x, y = random_crops(pages, size, batch, rng)
        opt.zero_grad(set_to_none=True)
        bce_dice(model(x), y).backward()
        opt.step()
        crops += batch
    return {"model": model.eval(), "crops": crops, "seconds": time.perf_counter() - start}


def compare_segmenter(cfg: RunConfig, prepared: PreparedData, budget_min: float, work: Path) -> dict:
    """Both sides on cfg's split at one budget; F1/IoU on the whole test pages. An epoch is data.crops_per_image
    crops of every training page (the preset's epoch); img/s counts crops."""
    train_pages, test_pages = load_pages(cfg, prepared, "train"), load_pages(cfg, prepared, "test")
    per_epoch = cfg.data.crops_per_image * len(train_pages)
    trained = train_segmenter(cfg, prepared, work / "run")
    model, _ = load_trained(Path(trained.best_checkpoint), cfg)
    base = train_baseline(train_pages, cfg.data.crop_size, budget_min * 60, cfg.train.batch_size, cfg.train.seed)
    cpu = torch.device("cpu")
    side = {
        "preset": (model, trained.epochs_run, trained.seconds, per_epoch * trained.epochs_run),
        "baseline": (base["model"], round(base["crops"] / per_epoch, 1), base["seconds"], base["crops"]),
    }
    row = {"kind": "segment", "name": cfg.name, "budget_min": budget_min}
    row |= {"train_images": len(train_pages), "test_images": len(test_pages)}
    for name, (net, epochs, seconds, crops) in side.items():
        m, _, _ = score_pages(cfg, test_pages, torch_predictor(net, cpu))
        row[name] = {
            **{k: round(m[k], 4) for k in HEADLINE if m.get(k) is not None},
            "epochs": epochs,
            "train_s": round(seconds, 1),
            "images_per_s": round(crops / seconds, 1),
        }
    return row
