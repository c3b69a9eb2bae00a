"""What scoring logs per image for either kind: a classifier's ml.monitoring.scoring columns, or a segmenter's
pixel uncertainty (its images predicted whole by overlapping tiles), size and 8 x 8 thumbnail descriptor.

    for frame in prediction_rows(production, image_source("incoming/"), band, batch_size=256, workers=4): ...
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from ml.config.evaluation import EvalConfig
from ml.core.files import sha256_bytes
from ml.core.kinds import KindRegistry
from ml.core.tiling import Predict, onnx_predictor, predict_tiled
from ml.data.errors import decode_problem
from ml.data.layouts import to_array
from ml.data.profile import DECODE_ERRORS
from ml.export.onnx import open_session
from ml.monitoring.production import Production
from ml.monitoring.scoring import ImageItem, embedding_columns, score_stream
from ml.monitoring.uncertainty import pixel_uncertainty
from ml.training.datasets import to_chw

DESCRIPTOR_PX = 8  # a segmenter's stand-in for embeddings: this many px a side of grey thumbnail


def decode(data: bytes, channels: int) -> np.ndarray:
    """H x W x C uint8, converted as training converts (ml.data.layouts.to_array)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return to_array(im, channels)


@dataclass(frozen=True)
class Segmenter:
    """A production segmenter run whole-image by overlapping tiles, with its version's eval settings."""

    production: Production
    tile: int
    overlap: float
    batch: int
    threshold: float

    @classmethod
    def of(cls, production: Production) -> Segmenter:
        ev = EvalConfig.model_validate(production.config.get("eval", {}))
        tile = ev.tile or int(production.config.get("data", {}).get("crop_size", 512))
        return cls(production, tile, ev.overlap, ev.batch, ev.threshold)

    def foreground(self, img: np.ndarray, predict: Predict) -> np.ndarray:
        """H x W foreground probabilities of an H x W x C uint8 image."""
        logits = predict_tiled(to_chw(img), predict, self.tile, self.overlap, self.batch)[0]
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))


def descriptor(img: np.ndarray) -> dict[str, float]:
    """The 8 x 8 grey thumbnail (0-1) as emb_00.. columns: a segmenter's stand-in for embeddings."""
    grey = img[..., 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (DESCRIPTOR_PX, DESCRIPTOR_PX), interpolation=cv2.INTER_AREA).ravel() / 255.0
    return dict(zip(embedding_columns(small.size), small.tolist(), strict=True))


def segment_stream(
    seg: Segmenter, items: Iterable[ImageItem], band: tuple[float, float], batch_size: int, workers: int
) -> Iterator[pd.DataFrame]:
    """One frame per `batch_size` images: pixel uncertainty, size, descriptor, sha256; bad files are rows."""
    predict, label = onnx_predictor(open_session(Path(seg.production.onnx))), seg.production.classes[0]

    def row(item: ImageItem) -> dict[str, Any]:
        out = {"file": item.file, "label": item.label, "readable": False, "error": "", "sha256": "", "pred": ""}
        try:
            data = item.read()
        except (OSError, KeyError) as e:
            return out | {"error": f"cannot read ({e})"}
        out["sha256"] = sha256_bytes(data)
        try:
            img = decode(data, seg.production.channels)
        except DECODE_ERRORS as e:
            return out | {"error": decode_problem(e, not data)}
        scores = pixel_uncertainty(seg.foreground(img, predict), band)
        size = {"width": float(img.shape[1]), "height": float(img.shape[0])}
        return out | {"readable": True, "pred": label, **size, **scores, **descriptor(img)}

    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while chunk := [item for _, item in zip(range(batch_size), it, strict=False)]:
            yield pd.DataFrame(list(pool.map(row, chunk)))


def _classifier_rows(
    production: Production, items: Iterable[ImageItem], band: tuple[float, float], batch_size: int, workers: int
) -> Iterator[pd.DataFrame]:
    return score_stream(production.classifier(), items, batch_size, workers)


def _segmenter_rows(
    production: Production, items: Iterable[ImageItem], band: tuple[float, float], batch_size: int, workers: int
) -> Iterator[pd.DataFrame]:
    return segment_stream(Segmenter.of(production), items, band, batch_size, workers)


Rows = Callable[[Production, Iterable[ImageItem], tuple[float, float], int, int], Iterator[pd.DataFrame]]
ROWS: KindRegistry[Rows] = KindRegistry("scoring", classify=_classifier_rows, segment=_segmenter_rows)


def prediction_rows(
    production: Production, items: Iterable[ImageItem], band: tuple[float, float], batch_size: int, workers: int
) -> Iterator[pd.DataFrame]:
    """What flows.score logs for any production model (ROWS by its kind); a segmenter's unsure pixels are those
    whose foreground probability lies inside `band`."""
    return ROWS(production.kind)(production, items, band, batch_size, workers)
