"""A segmenter as ONNX (dynamic batch, height and width), and any segmenter ONNX scored and timed on a split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ml.config.run import RunConfig
from ml.core.tiling import onnx_predictor
from ml.data.prepare import PreparedData
from ml.export.onnx import ExportResult, IncompatibleModel, export_checked, open_session
from ml.export.onnx_eval import latency_ms
from ml.training.datasets import pad_to, to_chw
from ml.training.loop import TrainResult, load_trained
from ml.training.pages import Page, load_pages, score_pages


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
