"""The flow's model steps for any model.task: classify -> ml.training.classifier, segment -> ml.training.segmenter.

    trained = train_step(cfg, prepared, run_dir)
    evaluation = evaluate_step(cfg, prepared, trained, run_dir)
    exported = export_step(cfg, prepared, trained, run_dir)

    metrics = onnx_metrics_step(cfg, prepared, Path("model.onnx"))   # champion/challenger, via onnxruntime
    ms = latency_step(cfg, prepared, Path("model.onnx"))
    shipped = shipped_evaluation(cfg, prepared, evaluation, Path("model.onnx"))   # what the gate judges

The tasks call these, so a new task kind is one module with the same functions plus a line here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ml.config.run import RunConfig
from ml.data.prepare import PreparedData
from ml.evaluation.gate import ChampionEval, GateReport
from ml.export import onnx_eval
from ml.export.onnx import ExportResult
from ml.export.quantize import quantize_classifier
from ml.training import classifier, distributed, segmenter
from ml.training.classifier import Evaluation
from ml.training.loop import TrainResult
from ml.training.models import pick_device

log = logging.getLogger(__name__)


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
    _checkpoints_of_this_split(prepared, run_dir)
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
    """model.onnx of the best checkpoint; with export.quantize (classifiers) the int8 model, its accuracy beside
    fp32's, is the candidate's file."""
    if cfg.model.task == "segment":
        return segmenter.export_segmenter(cfg, prepared, trained, run_dir)
    exported = classifier.export_classifier(cfg, prepared, trained, run_dir)
    return exported if cfg.export.quantize == "none" else quantize_classifier(cfg, prepared, exported)


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


def _checkpoints_of_this_split(prepared: PreparedData, run_dir: Path) -> None:
    """A retried flow run validates its data again. When the split changed since run_dir's checkpoints were
    written, they move to run_dir/stale-<old split id>/ and training starts over instead of resuming on other data."""
    run_dir.mkdir(parents=True, exist_ok=True)
    marker, now = run_dir / "split.id", prepared.split_id
    before = marker.read_text() if marker.exists() else now
    if before != now:
        stale = run_dir / f"stale-{before}"
        stale.mkdir(exist_ok=True)
        for name in ("last.pt", "best.pt"):
            if (run_dir / name).exists():
                (run_dir / name).replace(stale / name)
        log.warning(
            "the split changed since %s's checkpoints (%s -> %s): moved to %s, training from epoch 1",
            run_dir,
            before,
            now,
            stale,
        )
    marker.write_text(now)


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
