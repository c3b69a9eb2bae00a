"""The flow's model steps for any model.task: classify -> ml.classifier, segment -> ml.segmenter.

    trained = train_step(cfg, prepared, run_dir)
    evaluation = evaluate_step(cfg, prepared, trained, run_dir)
    exported = export_step(cfg, prepared, trained, run_dir)

    metrics = onnx_metrics_step(cfg, prepared, Path("model.onnx"))   # champion/challenger, via onnxruntime
    ms = latency_step(cfg, prepared, Path("model.onnx"))
    shipped = shipped_evaluation(cfg, prepared, evaluation, Path("model.onnx"))   # what the gate judges

The tasks call these, so a new task kind is one module with the same functions plus a line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ml import classifier, distributed, onnx_eval, segmenter
from ml.classifier import Evaluation
from ml.config import RunConfig
from ml.data.prepare import PreparedData
from ml.export import ExportResult
from ml.gate import ChampionEval, GateReport
from ml.models import pick_device
from ml.train import TrainResult


@dataclass(frozen=True)
class RunRecords:
    """What one retrain's steps produced: the report and the version's metadata are written from all of it."""

    prepared: PreparedData
    trained: TrainResult
    evaluation: Evaluation  # of the file that ships (shipped_evaluation)
    exported: ExportResult
    gate: GateReport
    champion: ChampionEval  # its production_version is the champion the run was judged against
    latency_ms: float


def train_step(cfg: RunConfig, prepared: PreparedData, run_dir: Path) -> TrainResult:
    train = segmenter.train_segmenter if cfg.model.task == "segment" else classifier.train_classifier
    if cfg.train.devices > 1:
        return distributed.launch(train, cfg, prepared, run_dir)
    _on_run_gpu(cfg)
    return train(cfg, prepared, run_dir)


def evaluate_step(cfg: RunConfig, prepared: PreparedData, trained: TrainResult, run_dir: Path) -> Evaluation:
    _on_run_gpu(cfg)
    if cfg.model.task == "segment":
        return segmenter.evaluate_segmenter(cfg, prepared, trained, run_dir)
    return classifier.evaluate_classifier(cfg, prepared, trained, run_dir)


def export_step(cfg: RunConfig, prepared: PreparedData, trained: TrainResult, run_dir: Path) -> ExportResult:
    if cfg.model.task == "segment":
        return segmenter.export_segmenter(cfg, prepared, trained, run_dir)
    return classifier.export_classifier(cfg, prepared, trained, run_dir)


def onnx_metrics_step(cfg: RunConfig, prepared: PreparedData, path: Path) -> dict[str, Any]:
    """Any exported model of this task (candidate or production) scored through onnxruntime on the val split."""
    if cfg.model.task == "segment":
        return segmenter.evaluate_onnx_segmenter(cfg, prepared, path)
    return onnx_eval.evaluate_on_split(cfg, prepared, path)


def latency_step(cfg: RunConfig, prepared: PreparedData, path: Path) -> float:
    """Median onnxruntime ms per image (classifier) or per eval.tile tile (segmenter), one thread."""
    if cfg.model.task == "segment":
        return segmenter.latency_on_split(cfg, prepared, path)
    return onnx_eval.latency_on_split(cfg, prepared, path)


def _on_run_gpu(cfg: RunConfig) -> None:
    """Make "cuda" mean the run's first claimed (or pinned) GPU in this thread: tasks run on threads, and a
    thread starts on GPU 0, which another training may hold."""
    if cfg.train.gpus and pick_device(cfg.train.device).type == "cuda":
        torch.cuda.set_device(cfg.train.gpus[0])


def shipped_evaluation(cfg: RunConfig, prepared: PreparedData, evaluation: Evaluation, onnx_path: Path) -> Evaluation:
    """The evaluation of the file that ships: what the gate judges, the version records and monitoring compares
    with. With export.tta or export.quantize (classifiers), model.onnx is not the checkpoint evaluate_step scored
    (flips averaged inside, int8 weights), so it is scored again through onnxruntime, same split and rule: a
    binary model's threshold is chosen again on the shipped file's probabilities, and that threshold ships."""
    inside = [name for name, on in (("flip TTA", cfg.export.tta), ("int8", cfg.export.quantize != "none")) if on]
    if not inside:
        return evaluation
    on = f"model.onnx as shipped ({', '.join(inside)}; onnxruntime)"
    return classifier.as_shipped(evaluation, onnx_metrics_step(cfg, prepared, onnx_path), prepared.classes, on)
