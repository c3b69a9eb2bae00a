"""An unlabeled pool, scored for active learning: one row per image, streamed, plus the chosen files read again.

    for frame in scored_items(production, image_source("incoming/"), lab, mon):
        ...  # file, readable, pred, confidence, margin, entropy, emb_*, sha256 (+ uncertain_share)
    files = PoolFiles("s3://bucket/pool", lab)
    files.read(uri), files.url(uri)                                 # bytes; what Label Studio's data.image gets

A classifier's pool goes through flows.score's hot loop (ml.monitoring.scoring.score_stream), each file's sha256 noted
as it is read. A segmenter's images are predicted whole by overlapping tiles with its version's eval settings, and
scored by ml.monitoring.uncertainty.pixel_uncertainty; segmenters have no embedding output, so their 8 x 8 grey
thumbnail
stands in for it (emb_* columns, for the diversity strategy). A file that does not read or decode is a row with
readable=False and its error, never fatal; only the current batch of images is held in memory.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import cv2
import numpy as np
import pandas as pd
from botocore.config import Config
from PIL import Image

from ml.config.evaluation import EvalConfig
from ml.config.production import LabelingConfig, MonitorConfig
from ml.core.files import sha256_bytes
from ml.core.tiling import Predict, onnx_predictor, predict_tiled
from ml.data.layouts import to_array
from ml.data.profile import DECODE_ERRORS
from ml.export.onnx import open_session
from ml.monitoring.reference import Production
from ml.monitoring.scoring import ImageItem, embedding_columns, score_stream
from ml.monitoring.uncertainty import pixel_uncertainty
from ml.training.datasets import to_chw

THUMBNAIL_PX, DESCRIPTOR_PX = 64, 8


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
            return out | {"error": f"cannot decode ({e})"}
        scores = pixel_uncertainty(seg.foreground(img, predict), band)
        size = {"width": float(img.shape[1]), "height": float(img.shape[0])}
        return out | {"readable": True, "pred": label, **size, **scores, **descriptor(img)}

    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while chunk := [item for _, item in zip(range(batch_size), it, strict=False)]:
            yield pd.DataFrame(list(pool.map(row, chunk)))


def prediction_rows(
    production: Production, items: Iterable[ImageItem], band: tuple[float, float], batch_size: int, workers: int
) -> Iterator[pd.DataFrame]:
    """What flows.score logs for any production model: a classifier's ml.monitoring.scoring columns, or a segmenter's
    pixel uncertainty (unsure pixels: foreground probability inside `band`), size and thumbnail descriptor."""
    if production.is_segmenter:
        return segment_stream(Segmenter.of(production), items, band, batch_size, workers)
    return score_stream(production.classifier(), items, batch_size, workers)


def _hashing(items: Iterable[ImageItem], digests: dict[str, str]) -> Iterator[ImageItem]:
    """The same items, each noting its content's sha256 in `digests` when it is read."""
    for item in items:

        def read(item: ImageItem = item) -> bytes:
            data = item.read()
            digests[item.file] = sha256_bytes(data)
            return data

        yield ImageItem(item.file, read, item.label)


def scored_items(
    production: Production, items: Iterable[ImageItem], lab: LabelingConfig, mon: MonitorConfig
) -> Iterator[pd.DataFrame]:
    """Pool images' rows, batch by batch: ml.monitoring.scoring columns (+ uncertain_share for segmenters) and
    sha256."""
    if production.is_segmenter:
        yield from segment_stream(Segmenter.of(production), items, lab.uncertain_band, mon.batch_size, mon.workers)
        return
    digests: dict[str, str] = {}
    for frame in score_stream(production.classifier(), _hashing(items, digests), mon.batch_size, mon.workers):
        yield frame.assign(sha256=[digests.pop(f, "") for f in frame["file"]])


class PoolFiles:
    """The chosen files read again, and named for Label Studio: a pre-signed URL for an S3 object, a local-files
    URL (/data/local-files/?d=...) below labeling.document_root, else the absolute path."""

    def __init__(self, pool: str, lab: LabelingConfig, endpoint_url: str | None = None):
        sigv4 = Config(signature_version="s3v4")  # boto3 may presign with SigV2, which newer AWS regions refuse
        self.client = boto3.client("s3", endpoint_url=endpoint_url, config=sigv4) if pool.startswith("s3://") else None
        self.expiry, self.root = lab.url_expiry_s, lab.document_root

    @staticmethod
    def _object(uri: str) -> dict[str, str]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return {"Bucket": bucket, "Key": key}

    def read(self, file: str) -> bytes:
        if self.client is not None and file.startswith("s3://"):
            return self.client.get_object(**self._object(file))["Body"].read()
        return Path(file).read_bytes()

    def url(self, file: str) -> str:
        if self.client is not None and file.startswith("s3://"):
            return self.client.generate_presigned_url("get_object", Params=self._object(file), ExpiresIn=self.expiry)
        path = Path(file).absolute()
        if self.root is None:
            return str(path)
        if not path.is_relative_to(self.root.absolute()):
            raise ValueError(f"{path} is not below labeling.document_root {self.root}: Label Studio cannot serve it")
        return "/data/local-files/?d=" + quote(path.relative_to(self.root.absolute()).as_posix())


def thumbnail(img: np.ndarray) -> str:
    """A PNG thumbnail (longest side THUMBNAIL_PX) as base64, for markdown data URIs."""
    im = Image.fromarray(img.squeeze())
    im.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    out = io.BytesIO()
    im.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()
