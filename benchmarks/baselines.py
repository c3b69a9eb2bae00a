"""A preset against the plain PyTorch script a competent engineer would write, at one wall-clock budget.

    python -m benchmarks.baselines --presets doodle-12 cifar10 --budget-min 3 --set data.test_fraction=0.15
    python -m benchmarks.baselines --presets demo --budget-min 0.1                   # tiny, generated data

Run it with -m from the checkout: as `python benchmarks/baselines.py` it imports whichever `ml` the environment
has installed (a shared venv's may be another checkout's).

Both sides use the preset's own train/val/test split (ml.data.prepare, so data.test_fraction holds the test
set back) and the same decoded uint8 images (ml.training.classifier.load_split). The preset trains through the
project's training entry (train_classifier, train.time_budget_min = the budget); the baseline is plain PyTorch:
tensors in memory, batch-wise flips and small shifts, a network for the image size (a 3-block CNN up to 28 px,
a half-width ResNet-9 above), AdamW, label smoothing 0.1, one-cycle over the wall clock. Both are scored on TEST
(the split neither selected on). Writes benchmarks/results/baselines.md and baselines.json with the machine.
Classifier presets only: a segmenter (strokes) has no baseline here yet.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ml.config.run import RunConfig, load_config, parse_override
from ml.core.metrics import classification_metrics, predict
from ml.data.prepare import prepare_dataset
from ml.training.classifier import load_split, train_classifier
from ml.training.datasets import ImageDataset
from ml.training.loop import load_trained

ROOT = Path(__file__).resolve().parent.parent
HEADLINE = ("accuracy", "macro_f1", "auroc")


def machine() -> str:
    return (
        f"{platform.node()}: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def conv_bn(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


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
    while (elapsed := time.perf_counter() - start) < budget_s:
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            frac = min((time.perf_counter() - start) / budget_s, 1.0)
            up = frac < 0.25  # one-cycle: linear warm-up over a quarter, cosine down to zero
            lr = 2e-3 * (frac / 0.25 if up else 0.5 * (1 + math.cos(math.pi * (frac - 0.25) / 0.75)))
            for g in opt.param_groups:
                g["lr"] = max(lr, 1e-6)
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


def compare(cfg: RunConfig, budget_min: float, work: Path) -> dict:
    """Both sides on cfg's split at one budget; metrics on the test split."""
    prepared = prepare_dataset(cfg.data, work / "prepared")
    images, targets = load_split(cfg, prepared, "train")
    test_x, test_y = load_split(cfg, prepared, "test")
    if len(test_y) == 0:
        raise SystemExit(f"{cfg.name}: the test split is empty; pass --set data.test_fraction=0.15")
    trained = train_classifier(cfg, prepared, work / "run")
    model, classes = load_trained(Path(trained.best_checkpoint), cfg)
    probs, _ = predict(model, DataLoader(ImageDataset(test_x, test_y), batch_size=256), torch.device("cpu"))
    base = train_baseline(images, targets, len(classes), budget_min * 60, cfg.train.seed)
    side = {
        "preset": (probs, trained.epochs_run, trained.seconds, len(targets) * trained.epochs_run / trained.seconds),
        "baseline": (baseline_probs(base["model"], test_x), base["epochs"], base["seconds"], base["images_per_s"]),
    }
    row = {"name": cfg.name, "budget_min": budget_min, "train_images": len(targets), "test_images": len(test_y)}
    for name, (p, epochs, seconds, ips) in side.items():
        m = classification_metrics(test_y, p, classes)
        row[name] = {
            **{k: round(m[k], 4) for k in HEADLINE if m.get(k) is not None},
            "epochs": epochs,
            "train_s": round(seconds, 1),
            "images_per_s": round(ips, 1),
        }
    return row


def markdown(rows: list[dict], where: str) -> str:
    lines = [
        "# Presets against a plain PyTorch baseline at equal wall-clock budget (metrics on the TEST split)",
        "",
        f"Machine: {where}",
        "",
        "| preset | budget min | train / test images | side | accuracy | macro-F1 | AUROC | epochs | train s | img/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for side in ("preset", "baseline"):
            s = r[side]
            lines.append(
                f"| {r['name']} | {r['budget_min']} | {r['train_images']} / {r['test_images']} | {side} "
                f"| {s.get('accuracy', '')} | {s.get('macro_f1', '')} | {s.get('auroc', '')} | {s['epochs']} "
                f"| {s['train_s']} | {s['images_per_s']} |"
            )
    return "\n".join(lines) + "\n"


def run(presets: list[str], budget_min: float, overrides: dict, out: Path) -> list[dict]:
    """Compare each preset with its baseline; write <out>.json and <out>.md."""
    rows = []
    for name in presets:
        cfg = load_config(name, {**overrides, "train.time_budget_min": budget_min})
        with tempfile.TemporaryDirectory(prefix="visionflow-baseline-") as tmp:
            rows.append(compare(cfg, budget_min, Path(tmp)))
    where = machine()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"machine": where, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(rows, where))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", required=True)
    p.add_argument("--budget-min", type=float, required=True, help="wall-clock training budget of each side")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "baselines")
    args = p.parse_args()
    overrides = {"data.test_fraction": 0.15, **dict(parse_override(o) for o in args.overrides)}
    run(args.presets, args.budget_min, overrides, args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
