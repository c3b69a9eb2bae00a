"""The export steps of any model.task, from the kind's Exporter (EXPORTERS): the file that ships, and any ONNX
file of the kind (candidate or production) scored and timed through onnxruntime.

    exported = export_step(cfg, prepared, trained, run_dir)
    metrics = onnx_metrics_step(cfg, prepared, Path("model.onnx"))   # champion/challenger, via onnxruntime
    ms = latency_step(cfg, prepared, Path("model.onnx"))
    shipped = shipped_evaluation(cfg, prepared, evaluation, Path("model.onnx"))   # what the gate judges
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.config.run import RunConfig
from ml.core.kinds import KindRegistry
from ml.data.prepare import PreparedData
from ml.evaluation.classifier import as_shipped
from ml.evaluation.record import Evaluation
from ml.export import onnx_eval, segmenter
from ml.export.classifier import export_classifier
from ml.export.onnx import ExportResult
from ml.export.quantize import quantize_classifier
from ml.training.loop import TrainResult


def _classifier_file(cfg: RunConfig, prepared: PreparedData, trained: TrainResult, run_dir: Path) -> ExportResult:
    """model.onnx of the best checkpoint; with export.quantize the int8 model, its accuracy beside fp32's."""
    exported = export_classifier(cfg, prepared, trained, run_dir)
    return exported if cfg.export.quantize == "none" else quantize_classifier(cfg, prepared, exported)


@dataclass(frozen=True)
class Exporter:
    export: Callable[[RunConfig, PreparedData, TrainResult, Path], ExportResult]
    onnx_metrics: Callable[[RunConfig, PreparedData, Path, str], dict[str, Any]]  # on one split ("val", "test")
    latency: Callable[[RunConfig, PreparedData, Path], float]  # median ms per image (segmenter: per tile)


EXPORTERS: KindRegistry[Exporter] = KindRegistry(
    "export",
    classify=Exporter(_classifier_file, onnx_eval.evaluate_on_split, onnx_eval.latency_on_split),
    segment=Exporter(segmenter.export_segmenter, segmenter.evaluate_onnx_segmenter, segmenter.latency_on_split),
)


def export_step(cfg: RunConfig, prepared: PreparedData, trained: TrainResult, run_dir: Path) -> ExportResult:
    return EXPORTERS(cfg.model.task).export(cfg, prepared, trained, run_dir)


def onnx_metrics_step(cfg: RunConfig, prepared: PreparedData, path: Path, side: str = "val") -> dict[str, Any]:
    """Any exported model of this task (candidate or production) scored through onnxruntime on one split
    (a binary threshold is chosen on validation, also for test)."""
    return EXPORTERS(cfg.model.task).onnx_metrics(cfg, prepared, path, side)


def latency_step(cfg: RunConfig, prepared: PreparedData, path: Path) -> float:
    """Median onnxruntime ms per image (classifier) or per eval.tile tile (segmenter), one thread."""
    return EXPORTERS(cfg.model.task).latency(cfg, prepared, path)


def shipped_evaluation(cfg: RunConfig, prepared: PreparedData, evaluation: Evaluation, onnx_path: Path) -> Evaluation:
    """The evaluation of the file that ships: what the gate judges, the version records and monitoring compares
    with. With export.tta or export.quantize (classifiers), model.onnx is not the checkpoint evaluate_step scored
    (flips averaged inside, int8 weights), so it is scored again through onnxruntime, same split and rule: a
    binary model's threshold is chosen again on the shipped file's validation probabilities, and that threshold
    ships (and scores the test split, when there is one)."""
    inside = [name for name, on in (("flip TTA", cfg.export.tta), ("int8", cfg.export.quantize != "none")) if on]
    if not inside:
        return evaluation
    on = f"model.onnx as shipped ({', '.join(inside)}; onnxruntime)"
    metrics = onnx_metrics_step(cfg, prepared, onnx_path)
    if prepared.judged_side == "test":
        metrics["test"] = onnx_metrics_step(cfg, prepared, onnx_path, "test")
    return as_shipped(evaluation, metrics, prepared.classes, on)
