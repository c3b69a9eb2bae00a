"""The reference a version is monitored against: its validation images, scored the way production scores.

    ref = reference_for_run(cfg, prepared, Path("model.onnx"), run_dir)  # reference.parquet + projection.npz
    prod = load_production(registry, "demo", Path("/tmp/cache"))         # the production version's files

At publish time the exported model scores the validation split through ml.monitoring.scoring (same decoding, same
columns as the prediction log: image properties, predicted class, confidence, margin, entropy, emb_*). The
pooled features are reduced by a PCA fitted on training images, so that reference rows and production rows
are both out-of-sample for the projection; the projection (mean + components) is saved with the version.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ml.config.run import RunConfig
from ml.core.kinds import KindRegistry
from ml.data.layouts import load_image
from ml.data.prepare import PreparedData
from ml.monitoring.scoring import ImageItem, OnnxClassifier, Projection, score_stream

REFERENCE_FILE = "reference.parquet"
PROJECTION_FILE = "projection.npz"
MAX_FIT_ROWS = 2000  # training images the PCA is fitted on (a seeded sample beyond that)


@dataclass
class ReferenceFiles:
    reference: str
    projection: str | None  # None: the model has no `embedding` output (e.g. exported before it existed)
    rows: int
    dims: int

    def files(self) -> dict[str, Path]:
        """Name -> local path, for the version's files."""
        extra = {PROJECTION_FILE: Path(self.projection)} if self.projection else {}
        return {REFERENCE_FILE: Path(self.reference), **extra}

    def to_dict(self) -> dict:
        return asdict(self)


def fit_projection(features: np.ndarray, dims: int) -> Projection:
    """PCA (by SVD) of N x F features to at most `dims` components; signs fixed so refits agree."""
    mean = features.mean(axis=0)
    _, _, vt = np.linalg.svd(features - mean, full_matrices=False)
    components = vt[: min(dims, len(features) - 1, vt.shape[0])]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    return Projection(mean.astype(np.float64), components * signs[:, None])


def split_items(frame: pd.DataFrame, channels: int) -> list[ImageItem]:
    """ImageItems for rows of a split table (path, row, label); an npy row is served as PNG bytes."""

    def npy_png(path: str, row: int) -> bytes:
        out = io.BytesIO()
        Image.fromarray(load_image(path, row, channels).squeeze()).save(out, format="PNG")
        return out.getvalue()

    return [
        ImageItem(p, Path(p).read_bytes, lab) if r < 0 else ImageItem(f"{p}#{r}", lambda p=p, r=r: npy_png(p, r), lab)
        for p, r, lab in zip(frame["path"], frame["row"], frame["label"], strict=True)
    ]


def raw_features(model: OnnxClassifier, items: list[ImageItem], batch_size: int = 256) -> np.ndarray:
    """The model's pooled features (N x F) of images known to decode (a validated split), decoded in threads."""
    parts = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(items), batch_size):
            resized = [r for _, r in pool.map(lambda it: model.prepare(it.read()), items[start : start + batch_size])]
            parts.append(model.run(np.stack(resized))[1])
    return np.concatenate(parts)


def build_reference(
    model: OnnxClassifier, reference: list[ImageItem], fit: list[ImageItem], dims: int, out_dir: Path
) -> ReferenceFiles:
    """Score `reference` (the validation images) with a PCA of `fit`'s features; write both files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    projection_path = None
    if model.has_embedding:
        model.projection = fit_projection(raw_features(model, fit), dims)
        projection_path = str(model.projection.save(out_dir / PROJECTION_FILE))
    rows = pd.concat(score_stream(model, reference), ignore_index=True)
    unreadable = rows.loc[~rows["readable"], ["file", "error"]]
    if len(unreadable):
        raise ValueError(f"reference images that do not decode: {unreadable.head(5).to_dict('records')}")
    rows.to_parquet(out_dir / REFERENCE_FILE, index=False)
    dims_kept = model.projection.components.shape[0] if projection_path else 0
    return ReferenceFiles(str(out_dir / REFERENCE_FILE), projection_path, len(rows), dims_kept)


def reference_for_run(
    cfg: RunConfig, prepared: PreparedData, onnx_path: Path, out_dir: Path, threshold: float | None = None
) -> ReferenceFiles:
    """The run's validation split as reference (predicted at the version's decision `threshold`, as production
    will be); the PCA fitted on (up to MAX_FIT_ROWS) training images."""
    split = pd.read_csv(prepared.split_csv, keep_default_na=False)
    train = split[split["split"] == "train"]
    train = train.sample(min(len(train), MAX_FIT_ROWS), random_state=cfg.data.split_seed)
    val = split[split["split"] == "val"]
    model = OnnxClassifier(onnx_path, prepared.classes, cfg.data.image_size, cfg.data.channels, threshold=threshold)
    ch = cfg.data.channels
    return build_reference(model, split_items(val, ch), split_items(train, ch), cfg.monitor.embedding_dims, out_dir)


def _no_reference(
    cfg: RunConfig, prepared: PreparedData, onnx_path: Path, out_dir: Path, threshold: float | None = None
) -> None:
    """Segmenters are scored and picked for labeling, not drift-monitored: no reference."""
    return None


Reference = Callable[[RunConfig, PreparedData, Path, Path, float | None], ReferenceFiles | None]
REFERENCES: KindRegistry[Reference] = KindRegistry("drift reference", classify=reference_for_run, segment=_no_reference)
