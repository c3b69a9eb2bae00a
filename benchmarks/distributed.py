"""Data-parallel scaling: training images/s on 1, 2, ... ranks (train.devices), same preset, data and epochs.

    python benchmarks/distributed.py                                  # demo preset, generated data, CPU ranks
    python benchmarks/distributed.py --preset cifar10 --devices 1 2 4 --epochs 2   # on a machine with 4 GPUs

Each setting trains through ml.training.step.train_step, as the retrain flow's train task does (spawned ranks, DDP,
rank-0 validation), on one prepared split. Images/s counts the training images of the epochs after the first
(start-up and the first epoch's caches excluded) over rank 0's epoch clock, validation included. Scaling
efficiency = images/s on N ranks / (N x images/s on 1). Goal on GPUs: >= 0.8 per added GPU. On CPU the ranks
share the machine's cores, so there is no gain to expect: the CPU path is for correctness (tests) only.
Prints a table, writes benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from ml.config.run import load_config, parse_override  # noqa: E402
from ml.data.prepare import prepare_dataset  # noqa: E402
from ml.training.models import pick_device  # noqa: E402
from ml.training.step import train_step  # noqa: E402

GOAL = 0.8


def run(preset: str, overrides: dict, devices: int, work: Path) -> dict:
    cfg = load_config(preset, {**overrides, "train.devices": devices, "storage.workdir": str(work / "runs")})
    prepared = prepare_dataset(cfg.data, work / "prep")
    train_images = sum(prepared.counts["train"].values())
    start = time.perf_counter()
    trained = train_step(cfg, prepared, work / f"run-{devices}")
    wall = time.perf_counter() - start
    timed = trained.history[1:] or trained.history
    return {
        "devices": devices,
        "device": trained.device,
        "epochs": len(trained.history),
        "wall_s": round(wall, 1),
        "epoch_s": round(sum(h["seconds"] for h in timed) / len(timed), 2),
        "images_per_s": round(train_images * len(timed) / sum(h["seconds"] for h in timed), 1),
        "best_metric": round(trained.best_metric, 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    overrides = {"train.epochs": args.epochs, "train.time_budget_min": None, "train.progress": False}
    overrides |= dict(parse_override(o) for o in args.overrides)
    device = pick_device(load_config(args.preset, overrides).train.device)
    machine = f"{platform.node()}: {os.cpu_count()} CPU cores, " + (
        f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if device.type == "cuda" else "no GPU"
    )
    with tempfile.TemporaryDirectory(prefix="visionflow-ddp-") as tmp:
        if args.preset == "demo":  # 2,000 generated shapes of its own
            overrides = {"data.root": f"{tmp}/data", "data.synthetic.per_class": 500, **overrides}
        rows = [run(args.preset, overrides, n, Path(tmp)) for n in args.devices]
    base = next((r["images_per_s"] for r in rows if r["devices"] == 1), None)
    for r in rows:
        r["efficiency"] = round(r["images_per_s"] / (r["devices"] * base), 2) if base else None
    print(f"# Data-parallel scaling: {args.preset}, {args.epochs} epochs ({machine})\n")
    print("| ranks | device | epoch s | train images/s | efficiency | best metric | wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['devices']} | {r['device']} | {r['epoch_s']} | {r['images_per_s']} | {r['efficiency']} "
            f"| {r['best_metric']} | {r['wall_s']} |"
        )
    out = ROOT / "benchmarks" / "results" / "distributed.json"
    out.write_text(json.dumps({"preset": args.preset, "machine": machine, "goal": GOAL, "runs": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
