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
import shlex
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import numpy as np
import pandas as pd
from botocore.config import Config
from PIL import Image

from ml.config.production import LabelingConfig, MonitorConfig
from ml.core.files import sha256_bytes
from ml.core.kinds import KindRegistry
from ml.monitoring.production import Production
from ml.monitoring.rows import Segmenter, segment_stream
from ml.monitoring.scoring import ImageItem, score_stream

THUMBNAIL_PX = 64


def _hashing(items: Iterable[ImageItem], digests: dict[str, str]) -> Iterator[ImageItem]:
    """The same items, each noting its content's sha256 in `digests` when it is read."""
    for item in items:

        def read(item: ImageItem = item) -> bytes:
            data = item.read()
            digests[item.file] = sha256_bytes(data)
            return data

        yield ImageItem(item.file, read, item.label)


def _classifier_items(
    production: Production, items: Iterable[ImageItem], lab: LabelingConfig, mon: MonitorConfig
) -> Iterator[pd.DataFrame]:
    digests: dict[str, str] = {}
    for frame in score_stream(production.classifier(), _hashing(items, digests), mon.batch_size, mon.workers):
        yield frame.assign(sha256=[digests.pop(f, "") for f in frame["file"]])


def _segmenter_items(
    production: Production, items: Iterable[ImageItem], lab: LabelingConfig, mon: MonitorConfig
) -> Iterator[pd.DataFrame]:
    return segment_stream(Segmenter.of(production), items, lab.uncertain_band, mon.batch_size, mon.workers)


PoolScorer = Callable[[Production, Iterable[ImageItem], LabelingConfig, MonitorConfig], Iterator[pd.DataFrame]]
POOL_SCORERS: KindRegistry[PoolScorer] = KindRegistry(
    "pool scoring", classify=_classifier_items, segment=_segmenter_items
)


def scored_items(
    production: Production, items: Iterable[ImageItem], lab: LabelingConfig, mon: MonitorConfig
) -> Iterator[pd.DataFrame]:
    """Pool images' rows, batch by batch: ml.monitoring.scoring columns (+ uncertain_share for segmenters) and
    sha256."""
    return POOL_SCORERS(production.kind)(production, items, lab, mon)


class PoolFiles:
    """The chosen files read again, and named for Label Studio: a pre-signed URL for an S3 object, else a
    local-files URL (/data/local-files/?d=...) below labeling.document_root (default: the pool's parent folder, so
    that the pool is the subfolder Label Studio's local storage must be registered on)."""

    def __init__(self, pool: str, lab: LabelingConfig, endpoint_url: str | None = None):
        sigv4 = Config(signature_version="s3v4")  # boto3 may presign with SigV2, which newer AWS regions refuse
        self.client = boto3.client("s3", endpoint_url=endpoint_url, config=sigv4) if pool.startswith("s3://") else None
        self.expiry, self.root, self.storage = lab.url_expiry_s, None, None
        if self.client is None:
            self.storage = Path(pool.removeprefix("file://")).absolute()
            self.root = (lab.document_root or self.storage.parent).absolute()
            if self.storage == self.root or not self.storage.is_relative_to(self.root):
                raise ValueError(
                    f"pool {self.storage} must be a subfolder of labeling.document_root {self.root}: Label Studio "
                    "serves local files only through a local storage on a subfolder of its document root"
                )

    @staticmethod
    def _object(uri: str) -> dict[str, str]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return {"Bucket": bucket, "Key": key}

    def read(self, file: str) -> bytes:
        return read_pool_file(file, self.client)

    def url(self, file: str) -> str:
        if self.client is not None and file.startswith("s3://"):
            return self.client.generate_presigned_url("get_object", Params=self._object(file), ExpiresIn=self.expiry)
        path = Path(file).absolute()
        if self.root is None or not path.is_relative_to(self.root):
            raise ValueError(f"{path} is not below labeling.document_root {self.root}: Label Studio cannot serve it")
        return "/data/local-files/?d=" + quote(path.relative_to(self.root).as_posix())

    def recipe(self) -> str:
        """How to start Label Studio so that these tasks display, and the local storage to add ("" for S3)."""
        if self.root is None:
            return ""
        return (
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={shlex.quote(str(self.root))} label-studio start\n"
            "then, in the project, add a Local Files storage (Settings > Cloud Storage) with "
            f"absolute path {self.storage}; import tasks.json"
        )


def read_pool_file(file: str, client: Any = None) -> bytes:
    """A pool file's bytes: an S3 object (through `client`, or a default one) or a local path."""
    if file.startswith("s3://"):
        bucket, _, key = file.removeprefix("s3://").partition("/")
        return (client or boto3.client("s3")).get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(file).read_bytes()


def thumbnail(img: np.ndarray) -> str:
    """A PNG thumbnail (longest side THUMBNAIL_PX) as base64, for markdown data URIs."""
    im = Image.fromarray(img.squeeze())
    im.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    out = io.BytesIO()
    im.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()
