"""Any classifier ONNX over this run's prepared images: metrics and latency, measured the way a consumer runs it.

    metrics = evaluate_on_split(cfg, prepared, Path("model.onnx"))      # ml.core.metrics's metrics, via onnxruntime
    ms = latency_on_split(cfg, prepared, Path("model.onnx"))           # median ms per image

The candidate and the production model go through the same functions, so their numbers are comparable.
The graph must take `N x C x H x W` float in [0, 1] and have a `probs` output (what ml.export.onnx writes).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ml.config.run import RunConfig
from ml.core.metrics import classification_metrics, decision_threshold
from ml.core.thresholds import decide
from ml.data.prepare import PreparedData
from ml.evaluation.classifier import applied_on_split, decided_on_split
from ml.export.onnx import IncompatibleModel, open_session
from ml.training.classifier import load_split


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 N x H x W x C (ml.training.classifier.load_split) -> float32 N x C x H x W in [0, 1], as in training."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def check_input(session: ort.InferenceSession, path: Path, images: np.ndarray) -> str:
    """The input's name, after checking its C x H x W against the images (dynamic dims accept anything)."""
    spec = session.get_inputs()[0]
    want = images.shape[1:]
    fixed = [d if isinstance(d, int) else None for d in spec.shape[1:]]
    if len(fixed) != len(want) or any(d is not None and d != w for d, w in zip(fixed, want, strict=True)):
        raise IncompatibleModel(f"{path}: input {spec.name!r} is {spec.shape}, this split's images are N x {want}")
    return spec.name


def onnx_probs(path: Path, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N x K, float64) of `images` (float32 N x C x H x W) from the `probs` output."""
    session = open_session(path)
    name = check_input(session, path, images)
    outputs = [o.name for o in session.get_outputs()]
    if "probs" not in outputs:
        raise IncompatibleModel(f"{path}: no 'probs' output (outputs: {outputs})")
    try:
        parts = [
            session.run(["probs"], {name: images[i : i + batch_size]})[0] for i in range(0, len(images), batch_size)
        ]
    except Exception as e:
        raise IncompatibleModel(f"{path}: onnxruntime failed on this split's images: {e}") from e
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 0))


def class_probs(path: Path, images: np.ndarray, classes: list[str]) -> np.ndarray:
    """Probabilities (N x K) of the ONNX model for uint8 images (N x H x W x C), checked to cover `classes`."""
    probs = onnx_probs(path, to_input(images))
    if probs.shape[1:] != (len(classes),):
        raise IncompatibleModel(f"{path}: predicts {probs.shape[1:]} classes, this split has {len(classes)}")
    return probs


def evaluate_onnx(
    path: Path, images: np.ndarray, targets: np.ndarray, classes: list[str], threshold: float | None = None
) -> dict[str, Any]:
    """ml.core.metrics.classification_metrics of the ONNX model on uint8 images (N x H x W x C); `threshold`: a
    binary model's stored decision threshold (None: argmax)."""
    return classification_metrics(targets, class_probs(path, images, classes), classes, threshold)


def evaluate_on_split(cfg: RunConfig, prepared: PreparedData, path: Path, side: str = "val") -> dict[str, Any]:
    """Metrics at eval.decision: a binary threshold is chosen on the validation split for each model scored (the
    candidate and production alike), so neither gets a threshold tuned elsewhere, and applied unchanged to test.
    `per_image` (target, prediction at that decision, log loss) is what the champion's paired bootstrap resamples."""
    images, targets = load_split(cfg, prepared, side)
    probs = class_probs(path, images, prepared.classes)
    if side == "val" or cfg.eval.decision == "argmax":
        metrics = decided_on_split(cfg, prepared, side, targets, probs)
    else:  # the threshold is validation's, never this split's
        val_images, val_targets = load_split(cfg, prepared, "val")
        chosen = decided_on_split(cfg, prepared, "val", val_targets, class_probs(path, val_images, prepared.classes))
        metrics = applied_on_split(prepared, side, targets, probs, chosen)
    preds = decide(probs, decision_threshold(metrics))
    clipped = np.clip(probs, 1e-12, 1.0)  # as classification_metrics' log loss, whose mean these are
    losses = -np.log(clipped[np.arange(len(targets)), targets] / clipped.sum(axis=1))
    rows = [
        {"target": int(t), "pred": int(p), "loss": float(x)} for t, p, x in zip(targets, preds, losses, strict=True)
    ]
    return metrics | {"per_image": rows}


def latency_ms(path: Path, images: np.ndarray, warmup: int = 3) -> float:
    """Median wall time (ms) of one-image runs over `images` (float32 N x C x H x W), one CPU thread.

    Batch 1 and one thread: the serving case, and the least noisy number on a shared machine.
    """
    session = open_session(path, threads=1)
    name = check_input(session, path, images)
    for i in range(min(warmup, len(images))):
        session.run(None, {name: images[i : i + 1]})
    times = []
    for i in range(len(images)):
        start = time.perf_counter()
        session.run(None, {name: images[i : i + 1]})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def latency_on_split(cfg: RunConfig, prepared: PreparedData, path: Path) -> float:
    """latency_ms over the first `gate.latency_images` validation images (a fixed batch for every run)."""
    images, _ = load_split(cfg, prepared, "val")
    return latency_ms(path, to_input(images[: cfg.gate.latency_images]))
