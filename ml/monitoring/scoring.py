"""Streaming onnxruntime scoring: image files in, one row per image out, memory flat whatever their number.

    model = OnnxClassifier(Path("model.onnx"), classes, image_size=32, channels=3, projection=Projection.load(p))
    for frame in score_stream(model, image_source("new/", classes), batch_size=256, workers=4):
        ...   # <= batch_size rows: file, label, readable, error, image properties, pred, confidence, emb_00...

Files are listed lazily (a folder walk, or S3 list pages), read and decoded by a bounded thread pool (at most
two batches in flight: the next batch decodes while onnxruntime runs the current one), and each batch leaves as
a DataFrame. A file that does not decode becomes a row with readable=False and the error; it is never fatal.
The reference frame of a version (ml.monitoring.reference) is made of the same rows, so every column means the same
thing at training time and in production.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from ml.config.production import IMAGE_PROPERTIES, PREDICTION_COLUMNS
from ml.core.thresholds import at_threshold, decide
from ml.data.errors import decode_problem
from ml.data.layouts import IMAGE_EXTS, to_array
from ml.data.profile import DECODE_ERRORS, _grey_stats
from ml.export.onnx import IncompatibleModel, open_session
from ml.registry.s3_store import S3Store
from ml.registry.storage import open_store

CHANNEL_NAMES = ("red", "green", "blue")
# input values per onnxruntime call (OnnxClassifier.run): 682 RGB 32 x 32 images, 14 grey 384 x 384 ones. A
# 256-image batch of 384 px tiles through a flip-TTA ResNet peaked at 16 GB; this bounds it near 1 GB.
MAX_CALL_VALUES = 1 << 21


@dataclass(frozen=True)
class ImageItem:
    file: str  # path or s3:// URI, as logged
    read: Callable[[], bytes]
    label: str = ""  # the class folder the file sits in, when that folder is one of the model's classes


def _label(parent: str, classes: set[str]) -> str:
    return parent if parent in classes else ""


def local_images(root: Path, classes: Iterable[str] = ()) -> Iterator[ImageItem]:
    """Every .png/.jpg/.jpeg under `root` (recursive, hidden entries skipped), lazily: a folder's entries are
    streamed in directory order, never listed whole, so a folder of a million files costs no memory."""
    root, known = Path(root), set(classes)
    if not root.is_dir():
        raise FileNotFoundError(f"image source {root} is not a folder")
    folders = [str(root)]
    while folders:
        subfolders = []
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    subfolders.append(entry.path)
                elif entry.name.lower().endswith(IMAGE_EXTS) and entry.is_file():
                    path = Path(entry.path)
                    yield ImageItem(entry.path, path.read_bytes, _label(path.parent.name, known))
        folders += sorted(subfolders, reverse=True)  # depth first, folders in name order


def s3_images(uri: str, classes: Iterable[str] = (), endpoint_url: str | None = None) -> Iterator[ImageItem]:
    """Every image object under `s3://bucket/prefix`, listed page by page (never the whole listing at once)."""
    store: S3Store = open_store(uri, endpoint_url)  # an s3:// URI opens an S3Store
    known = set(classes)
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=store.prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            key = obj["Key"][len(store.prefix) :]
            if key.lower().endswith(IMAGE_EXTS) and not key.rsplit("/", 1)[-1].startswith("."):
                parent = key.rsplit("/", 2)[-2] if "/" in key else ""
                yield ImageItem(store.url(key), lambda k=key: store.get_bytes(k), _label(parent, known))


def image_source(source: str, classes: Iterable[str] = (), endpoint_url: str | None = None) -> Iterator[ImageItem]:
    """A folder path, file:// URI or s3:// prefix -> lazy ImageItems."""
    parsed = urlparse(source)
    if parsed.scheme == "s3":
        return s3_images(source, classes, endpoint_url)
    if parsed.scheme in ("", "file"):
        return local_images(Path(unquote(parsed.netloc + parsed.path) if parsed.scheme else source), classes)
    raise ValueError(f"unsupported image source {source!r}: use a folder, file://PATH or s3://BUCKET/PREFIX")


ImageRef = tuple[str, str]  # (file as logged: a path or an s3:// URI, label): an ImageItem that pickles


def source_shards(
    source: str, classes: Iterable[str], size: int, endpoint_url: str | None = None
) -> Iterator[list[ImageRef]]:
    """The source's images as lists of `size` references, listed lazily: the shards flows.score hands to tasks
    that may run in other processes or on other machines (which reopen them with `referenced_images`)."""
    shard: list[ImageRef] = []
    for item in image_source(source, classes, endpoint_url):
        shard.append((item.file, item.label))
        if len(shard) == size:
            yield shard
            shard = []
    if shard:
        yield shard


def referenced_images(refs: Iterable[ImageRef], endpoint_url: str | None = None) -> Iterator[ImageItem]:
    """ImageItems again from (file, label) references: local paths, or s3:// URIs (one client per bucket)."""
    stores: dict[str, S3Store] = {}
    for file, label in refs:
        if not file.startswith("s3://"):
            yield ImageItem(file, Path(file).read_bytes, label)
            continue
        bucket, key = file[len("s3://") :].split("/", 1)  # not urlparse: a key may hold '#' or '?'
        if bucket not in stores:
            stores[bucket] = open_store(f"s3://{bucket}", endpoint_url)
        yield ImageItem(file, lambda store=stores[bucket], key=key: store.get_bytes(key), label)


def image_properties(img: np.ndarray) -> dict[str, float]:
    """Size, grey brightness/contrast/blur (as in data profiling) and channel means of a decoded HxWxC image."""
    grey = img[..., 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    props = {"width": float(img.shape[1]), "height": float(img.shape[0]), **_grey_stats(grey)}
    if img.shape[2] == 3:
        props.update(zip(CHANNEL_NAMES, img.reshape(-1, 3).mean(axis=0).tolist(), strict=True))
    return props


@dataclass(frozen=True)
class Projection:
    """PCA of the model's pooled features, fitted at training time (ml.monitoring.reference) and saved with the
    version."""

    mean: np.ndarray  # F
    components: np.ndarray  # k x F

    def apply(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) @ self.components.T).astype(np.float32)

    def save(self, path: Path) -> Path:
        np.savez(path, mean=self.mean, components=self.components)
        return path

    @classmethod
    def load(cls, path: Path) -> Projection:
        with np.load(path) as z:
            return cls(z["mean"], z["components"])


def embedding_columns(k: int) -> list[str]:
    return [f"emb_{i:02d}" for i in range(k)]


class OnnxClassifier:
    """An exported classifier (ml.export.onnx) in onnxruntime: uint8 images in, probabilities and embeddings out."""

    def __init__(
        self,
        path: Path,
        classes: list[str],
        image_size: int,
        channels: int,
        projection: Projection | None = None,
        threads: int = 0,
        threshold: float | None = None,
    ):
        self.session = open_session(path, threads)
        self.input = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        if "probs" not in outputs:
            raise IncompatibleModel(f"{path}: no 'probs' output (outputs: {outputs})")
        self.has_embedding = "embedding" in outputs
        self.classes, self.size, self.channels, self.projection = classes, image_size, channels, projection
        self.threshold = threshold  # a binary model's decision threshold (eval.decision), None: argmax

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probs N x K, raw pooled features N x F or None) for uint8 images N x size x size x channels; one
        onnxruntime call per MAX_CALL_VALUES input values, so memory does not grow with batch x image size."""
        names = ["probs", "embedding"] if self.has_embedding else ["probs"]
        step = max(1, MAX_CALL_VALUES // int(np.prod(images.shape[1:])))
        outs = []
        for i in range(0, max(len(images), 1), step):
            x = np.ascontiguousarray(images[i : i + step].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
            outs.append(self.session.run(names, {self.input: x}))
        probs = np.concatenate([o[0] for o in outs]).astype(np.float64)
        return probs, np.concatenate([o[1] for o in outs]) if self.has_embedding else None

    def prepare(self, data: bytes) -> tuple[dict[str, float], np.ndarray]:
        """Decode at the training conversion (ml.data.layouts.to_array), measure, resize to the model's input."""
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            img = to_array(im, self.channels)
        resized = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return image_properties(img), resized.reshape(self.size, self.size, self.channels)


def prediction_columns(probs: np.ndarray, classes: list[str], threshold: float | None = None) -> dict[str, np.ndarray]:
    """Predicted class (argmax, or a binary model's threshold), confidence (max probability), margin (top-1 minus
    top-2) and entropy (nats) per row. With a threshold the three are measured from it
    (ml.core.thresholds.at_threshold): an image at the threshold is the least sure, whatever its probability."""
    pred = decide(probs, threshold)
    probs = at_threshold(probs, threshold)
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.hstack([np.zeros_like(probs), probs])
    p = np.clip(probs, 1e-12, 1.0)
    return {
        "pred": np.asarray(classes, dtype=object)[pred],
        "confidence": top2[:, 1],
        "margin": top2[:, 1] - top2[:, 0],
        "entropy": -(p * np.log(p)).sum(axis=1),
    }


def score_images(model: OnnxClassifier, images: list[np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Prediction columns and raw features of resized uint8 images (one onnxruntime call)."""
    probs, features = model.run(np.stack(images))
    return prediction_columns(probs, model.classes, model.threshold), features


def _load(model: OnnxClassifier, item: ImageItem) -> tuple[ImageItem, dict | None, np.ndarray | None, str]:
    """(item, properties, resized image, "") or (item, None, None, why): a bad file is a row, never a crash."""
    try:
        data = item.read()
    except (OSError, KeyError) as e:  # gone since it was listed (ObjectNotFound is a KeyError), unreadable
        return item, None, None, f"cannot read ({e})"
    try:
        props, resized = model.prepare(data)
    except DECODE_ERRORS as e:
        return item, None, None, decode_problem(e, not data)
    return item, props, resized, ""


def row_schema(model: OnnxClassifier) -> list[str]:
    """The row schema of `model`'s scores (reference frame and prediction log share it)."""
    props = [p for p in IMAGE_PROPERTIES if model.channels == 3 or p not in CHANNEL_NAMES]
    dims = model.projection.components.shape[0] if model.projection is not None and model.has_embedding else 0
    return ["file", "label", "readable", "error", *props, *PREDICTION_COLUMNS, *embedding_columns(dims)]


def _frame(model: OnnxClassifier, loaded: list[tuple[ImageItem, dict | None, np.ndarray | None, str]]) -> pd.DataFrame:
    """Rows in `row_schema(model)` order; unreadable files keep NaN (and pred "") where nothing was measured."""
    ok = [i for i, (_, props, _, _) in enumerate(loaded) if props is not None]
    rows = pd.DataFrame(index=range(len(loaded)), columns=row_schema(model), dtype="float64")
    rows["file"] = [it.file for it, *_ in loaded]
    rows["label"] = [it.label for it, *_ in loaded]
    rows["readable"] = [props is not None for _, props, _, _ in loaded]
    rows["error"] = [err for *_, err in loaded]
    rows["pred"] = ""
    if ok:
        props = pd.DataFrame([loaded[i][1] for i in ok], index=ok)
        rows.loc[ok, props.columns] = props
        preds, features = score_images(model, [loaded[i][2] for i in ok])
        for name, values in preds.items():
            rows.loc[ok, name] = values
        if features is not None and model.projection is not None:
            emb = model.projection.apply(features)
            rows.loc[ok, embedding_columns(emb.shape[1])] = emb
    return rows


def _batches(items: Iterable[ImageItem], size: int) -> Iterator[list[ImageItem]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def score_stream(
    model: OnnxClassifier, items: Iterable[ImageItem], batch_size: int = 256, workers: int = 4
) -> Iterator[pd.DataFrame]:
    """One DataFrame per batch; the next batch is read and decoded while onnxruntime scores this one."""
    batches = _batches(items, batch_size)
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(batch: list[ImageItem]) -> list[Future]:
            return [pool.submit(_load, model, item) for item in batch]

        pending = submit(next(batches, []))
        while pending:
            current, pending = pending, submit(next(batches, []))
            yield _frame(model, [f.result() for f in current])
