"""Whole segmentation pages of a split with their masks, and their scores under any predictor.

Training validates on them each epoch, evaluation scores the best checkpoint on them, export scores the ONNX
file on them (tiled as in serving, ml.core.tiling): one loader and one scorer for all three.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ml.config.run import RunConfig
from ml.core.seg_metrics import SCORES, image_scores, postprocess, summarize
from ml.core.tiling import Predict, predict_tiled
from ml.data.errors import DatasetError
from ml.data.layouts import load_image
from ml.data.masks import load_mask
from ml.data.prepare import PreparedData
from ml.training.datasets import to_chw
from ml.training.losses import SegLoss


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
