"""A segmenter's best checkpoint on the whole validation pages: metrics (mean and per page), overlays, curves;
with a test split, the test pages' metrics under `metrics["test"]` (same eval settings, nothing chosen on them)."""

from __future__ import annotations

import json
from pathlib import Path

from ml.config.run import RunConfig
from ml.core.tiling import torch_predictor
from ml.data.prepare import PreparedData
from ml.evaluation.plots import curves_png, overlay_png
from ml.evaluation.record import Evaluation
from ml.training.loop import TrainResult, load_trained
from ml.training.models import pick_device
from ml.training.pages import load_pages, score_pages


def evaluate_segmenter(cfg: RunConfig, prepared: PreparedData, train: TrainResult, run_dir: Path) -> Evaluation:
    """Best checkpoint on the whole validation pages (and test pages, when there are): metrics JSON (mean and per
    page), overlays, curves."""
    device = pick_device(cfg.train.device)
    model, _ = load_trained(Path(train.best_checkpoint), cfg, device)
    pages = load_pages(cfg, prepared, "val")
    metrics, rows, preds = score_pages(cfg, pages, torch_predictor(model, device))
    metrics |= {"n": len(pages), "per_image": rows}
    if prepared.judged_side == "test":
        test_pages = load_pages(cfg, prepared, "test")
        test, test_rows, _ = score_pages(cfg, test_pages, torch_predictor(model, device))
        metrics["test"] = test | {"n": len(test_pages), "per_image": test_rows}
    metrics_path = run_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=1))
    plots = {"curves": str(curves_png(train.history, run_dir / "plots" / "curves.png"))}
    for page, pred in list(zip(pages, preds, strict=True))[: cfg.eval.overlays]:
        name = f"overlay-{page.id}"
        plots[name] = str(overlay_png(page.image, page.mask, pred, run_dir / "plots" / f"{name}.png"))
    return Evaluation(metrics, str(metrics_path), plots)
