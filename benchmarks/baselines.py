"""A preset against the plain PyTorch script a competent engineer would write, at one wall-clock budget.

    python -m benchmarks.baselines --presets doodle-12 cifar10 --budget-min 3 --set data.test_fraction=0.15
    python -m benchmarks.baselines --presets demo demo-seg --budget-min 0.1 --set data.test_fraction=0.2  # tiny
    python -m benchmarks.baselines --presets strokes --budget-min 4                   # the segmenter

Run it with -m from the checkout: as `python benchmarks/baselines.py` it imports whichever `ml` the environment
has installed (a shared venv's may be another checkout's).

Both sides use the preset's own train/val/test split (ml.data.prepare, so data.test_fraction holds the test
set back) and the same decoded images. The preset trains through the project's training entry (train.time_budget_min
= the budget); the baseline is the plain PyTorch script of its kind: benchmarks.baseline_classifier (tensors in
memory, batch-wise augmentation, a network for the image size) or benchmarks.baseline_segmenter (a small U-Net on
in-memory crops, BCE + Dice), each AdamW with one-cycle over the wall clock. Both are scored on TEST (the split
neither selected on) by the project's metric code. Writes benchmarks/results/baselines.md and baselines.json with
the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from benchmarks.baseline_classifier import compare_classifier
from benchmarks.baseline_segmenter import compare_segmenter
from ml.config.run import RunConfig, load_config, parse_override
from ml.data.prepare import prepare_dataset

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    return (
        f"{platform.node()}: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def compare(cfg: RunConfig, budget_min: float, work: Path) -> dict:
    """Both sides on cfg's split at one budget (the kind's script); metrics on the test split."""
    prepared = prepare_dataset(cfg.data, work / "prepared")
    if "test" not in prepared.counts:
        raise SystemExit(f"{cfg.name}: the test split is empty; pass --set data.test_fraction=0.15")
    if cfg.model.task == "segment":
        return compare_segmenter(cfg, prepared, budget_min, work)
    return compare_classifier(cfg, prepared, budget_min, work)


TABLES = {  # kind -> title, metric columns (key, header)
    "classify": ("Classifiers", (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("auroc", "AUROC"))),
    "segment": ("Segmenters (images: pages; img/s: crops)", (("f1", "F1"), ("iou", "IoU"), ("edge_iou", "edge IoU"),
                                                             ("f1_post", "F1 post"))),
}  # fmt: skip


def markdown(rows: list[dict], where: str) -> str:
    lines = ["# Presets against a plain PyTorch baseline at equal wall-clock budget (metrics on the TEST split)", ""]
    lines.append(f"Machine: {where}")
    for kind, (title, metrics) in TABLES.items():
        kept = [r for r in rows if r.get("kind", "classify") == kind]
        if not kept:
            continue
        head = " | ".join(h for _, h in metrics)
        lines += ["", f"## {title}", "", f"| preset | budget min | train / test images | side | {head} "
                  "| epochs | train s | img/s |", "|---" * (len(metrics) + 7) + "|"]  # fmt: skip
        for r in kept:
            for side in ("preset", "baseline"):
                s = r[side]
                values = " | ".join(str(s.get(k, "")) for k, _ in metrics)
                lines.append(
                    f"| {r['name']} | {r['budget_min']} | {r['train_images']} / {r['test_images']} | {side} "
                    f"| {values} | {s['epochs']} | {s['train_s']} | {s['images_per_s']} |"
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
    overrides = dict(parse_override(o) for o in args.overrides)  # the preset's own test_fraction unless set
    run(args.presets, args.budget_min, overrides, args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
