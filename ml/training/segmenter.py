"""Segmentation steps over a prepared split (layout image_mask): train on crops, evaluate whole images, export.

The same three functions and records as ml.training.classifier, so the flow's tasks call either (ml.export.steps picks):

    trained = train_segmenter(cfg, prepared, run_dir)       # random crops (data.crop_size), foreground-biased
    evaluation = evaluate_segmenter(cfg, prepared, trained, run_dir)   # full-size pages by overlapping tiles
    exported = export_segmenter(cfg, prepared, trained, run_dir)       # ONNX, dynamic H x W, parity on 2 sizes

Pages are never resized: training sees crops of them, evaluation and serving see them whole (ml.core.tiling).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ml.config.run import RunConfig
from ml.core.seg_metrics import SCORES, image_scores, postprocess, summarize
from ml.core.tiling import Predict, onnx_predictor, predict_tiled, torch_predictor
from ml.data.layouts import DatasetError, load_image
from ml.data.masks import load_mask
from ml.data.prepare import PreparedData
from ml.evaluation.plots import curves_png, overlay_png
from ml.export.onnx import ExportResult, IncompatibleModel, export_checked, open_session
from ml.export.onnx_eval import latency_ms
from ml.training.classifier import Evaluation
from ml.training.datasets import CropDataset, pad_to, to_chw
from ml.training.loop import TrainResult, fit, load_trained
from ml.training.losses import SegLoss
from ml.training.models import pick_device


@dataclass
class Page:
    id: str
    image: np.ndarray  # H x W x C uint8
    mask: np.ndarray  # H x W uint8 in {0, 1}


def load_pages(cfg: RunConfig, prepared: PreparedData, side: str) -> list[Page]:
    """Every image of one split with its mask, decoded at full size (threads: PIL releases the GIL)."""
    frame = pd.read_csv(prepared.split_csv, keep_default_na=False)
    frame = frame[frame["split"] == side]
    if "mask" not in frame.columns:
        raise DatasetError(f"{prepared.split_csv}: no mask column; segmentation needs data.layout=image_mask")

    def one(row: tuple[str, str]) -> Page:
        path, mask_path = row
        if not mask_path:
            raise DatasetError(f"{path}: no mask in {Path(prepared.root) / 'masks'} (image_mask needs one per image)")
        page = Page(Path(path).stem, load_image(path, -1, cfg.data.channels), load_mask(mask_path))
        if page.image.shape[:2] != page.mask.shape:
            raise DatasetError(f"{mask_path}: mask {page.mask.shape} is not the size of its image {page.image.shape}")
        return page

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, zip(frame["path"], frame["mask"], strict=True)))


def page_logits(cfg: RunConfig, page: Page, predict: Predict) -> np.ndarray:
    """H x W logits of one whole page by overlapping tiles (eval.tile, default data.crop_size)."""
    ev = cfg.eval
    return predict_tiled(to_chw(page.image), predict, ev.tile or cfg.data.crop_size, ev.overlap, ev.batch)[0]


def score_pages(
    cfg: RunConfig, pages: list[Page], predict: Predict, post: bool = True
) -> tuple[dict[str, float], list[dict], list[np.ndarray]]:
    """Mean metrics over pages (with <metric>_post beside each when eval.postprocess is set and `post`),
    the per-page rows, and the binary predictions. `loss` is train.loss on the whole pages."""
    ev, criterion = cfg.eval, SegLoss(cfg.train.loss, cfg.train.focal_gamma)
    raw, cleaned, rows, preds, losses = [], [], [], [], []
    for page in pages:
        logits = page_logits(cfg, page, predict)
        pred = (logits > np.log(ev.threshold / (1 - ev.threshold))).astype(np.uint8)
        target = torch.from_numpy(page.mask[None, None].astype(np.float32))
        losses.append(float(criterion(torch.from_numpy(logits[None, None]), target)))
        raw.append(image_scores(pred, page.mask, ev.boundary))
        row = {"id": page.id, **raw[-1]}
        if post and ev.postprocess is not None:
            cleaned.append(image_scores(postprocess(pred, **ev.postprocess.model_dump()), page.mask, ev.boundary))
            row |= {f"{k}_post": v for k, v in cleaned[-1].items()}
        rows.append(row)
        preds.append(pred)
    mean, mean_post = summarize(raw), summarize(cleaned) if cleaned else {}
    metrics = {name: value for k in SCORES for name, value in ((k, mean[k]), (f"{k}_post", mean_post.get(k)))}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    return {**metrics, "loss": float(np.mean(losses))}, rows, preds


def train_segmenter(cfg: RunConfig, prepared: PreparedData, run_dir: Path) -> TrainResult:
    """ml.training.loop.fit on random crops; each epoch is validated on the whole validation pages (raw metrics)."""
    train_ds = CropDataset([(p.image, p.mask) for p in load_pages(cfg, prepared, "train")], cfg)
    val_pages = load_pages(cfg, prepared, "val")

    def validate(model: nn.Module, device: torch.device, amp: bool) -> dict[str, float]:
        metrics, _, _ = score_pages(cfg, val_pages, torch_predictor(model, device, amp), post=False)
        return {k: metrics[k] for k in ("loss", "f1", "iou", "edge_iou")}

    criterion = SegLoss(cfg.train.loss, cfg.train.focal_gamma)
    return fit(cfg, train_ds, None, prepared.classes, run_dir, objective=(criterion, validate))


def evaluate_segmenter(cfg: RunConfig, prepared: PreparedData, train: TrainResult, run_dir: Path) -> Evaluation:
    """Best checkpoint on the whole validation pages: metrics JSON (mean and per page), overlays, curves."""
    device = pick_device(cfg.train.device)
    model, _ = load_trained(Path(train.best_checkpoint), cfg, device)
    pages = load_pages(cfg, prepared, "val")
    metrics, rows, preds = score_pages(cfg, pages, torch_predictor(model, device))
    metrics |= {"n": len(pages), "per_image": rows}
    metrics_path = run_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=1))
    plots = {"curves": str(curves_png(train.history, run_dir / "plots" / "curves.png"))}
    for page, pred in list(zip(pages, preds, strict=True))[: cfg.eval.overlays]:
        name = f"overlay-{page.id}"
        plots[name] = str(overlay_png(page.image, page.mask, pred, run_dir / "plots" / f"{name}.png"))
    return Evaluation(metrics, str(metrics_path), plots)


def export_segmenter(cfg: RunConfig, prepared: PreparedData, train: TrainResult, run_dir: Path) -> ExportResult:
    """ONNX with dynamic batch, height and width; parity checked on crops of a validation page at two sizes."""
    model, _ = load_trained(Path(train.best_checkpoint), cfg, "cpu")
    page = load_pages(cfg, prepared, "val")[0]
    tile = cfg.eval.tile or cfg.data.crop_size
    batches = [_crops(page, h, w) for h, w in [(tile, tile), (max(32, tile // 2), tile + 32)]]
    return export_checked(model, batches, run_dir / "model.onnx", cfg.export.opset, cfg.export.parity_tolerance)


def _crops(page: Page, h: int, w: int) -> torch.Tensor:
    """Two h x w crops of a page (its top-left and bottom-right corners; mirror-padded if it is smaller)."""
    image = pad_to(page.image, max(h, w))
    ih, iw = image.shape[:2]
    corners = [image[:h, :w], image[ih - h :, iw - w :]]
    return torch.from_numpy(np.stack([to_chw(c) for c in corners]))


def evaluate_onnx_segmenter(cfg: RunConfig, prepared: PreparedData, path: Path, side: str = "val") -> dict:
    """score_pages through onnxruntime, tiled as in serving: the numbers a deployed model reaches. A model that
    cannot score these pages (other channels, not a segmenter) is IncompatibleModel, as for classifiers."""
    pages, session = load_pages(cfg, prepared, side), open_session(path)
    try:
        metrics, rows, _ = score_pages(cfg, pages, onnx_predictor(session))
    except Exception as e:  # onnxruntime's errors share no base class below Exception
        raise IncompatibleModel(f"{path}: cannot segment this split's pages: {e}") from e
    return {**metrics, "n": len(pages), "per_image": rows}


def latency_on_split(cfg: RunConfig, prepared: PreparedData, path: Path) -> float:
    """Median onnxruntime ms per tile (eval.tile px a side, one thread) over the first gate.latency_images
    validation pages' top-left tiles: the unit serving cost scales with (a page is about H x W / stride^2 tiles)."""
    tile = cfg.eval.tile or cfg.data.crop_size
    pages = load_pages(cfg, prepared, "val")[: cfg.gate.latency_images]
    return latency_ms(path, np.concatenate([_crops(page, tile, tile)[:1].numpy() for page in pages]))
