"""Evaluation, export and gate tasks."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from ml.classifier import Evaluation, evaluate_classifier, export_classifier
from ml.config import RunConfig
from ml.data.prepare import PreparedData
from ml.export import ExportResult
from ml.gate import GateReport, evaluate_gate
from ml.train import TrainResult


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_model(cfg: RunConfig, prepared: PreparedData, trained: TrainResult, run_dir: Path) -> Evaluation:
    return evaluate_classifier(cfg, prepared, trained, run_dir)


@task(name="export-onnx", cache_policy=NO_CACHE)
def export_model(cfg: RunConfig, prepared: PreparedData, trained: TrainResult, run_dir: Path) -> ExportResult:
    """Fails the run if onnxruntime disagrees with torch beyond export.parity_tolerance."""
    return export_classifier(cfg, prepared, trained, run_dir)


@task(name="gate", cache_policy=NO_CACHE)
def gate_model(cfg: RunConfig, evaluation: Evaluation) -> GateReport:
    return evaluate_gate(evaluation.scalars(), cfg.gate)
