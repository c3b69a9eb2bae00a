"""Evaluation, export, champion/challenger, latency and gate tasks."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from ml.config.run import RunConfig
from ml.data.prepare import PreparedData
from ml.evaluation.gate import Candidate, ChampionEval, GateReport, evaluate_gate
from ml.evaluation.record import Evaluation
from ml.evaluation.step import evaluate_step
from ml.export.onnx import ExportResult
from ml.export.step import export_step, latency_step, shipped_evaluation
from ml.registry.champion import challenge
from ml.training.loop import TrainResult
from tasks.gpus import on_gpus
from tasks.registry import STORE_RETRIES, open_registry


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_model(cfg: RunConfig, prepared: PreparedData, trained: TrainResult, run_dir: Path) -> Evaluation:
    """On CUDA, on one GPU that no training holds (the training's own claim ended with its task)."""
    with on_gpus(cfg, 1) as placed:
        return evaluate_step(placed, prepared, trained, run_dir)


@task(name="export-onnx", cache_policy=NO_CACHE)
def export_model(cfg: RunConfig, prepared: PreparedData, trained: TrainResult, run_dir: Path) -> ExportResult:
    """Fails the run if onnxruntime disagrees with torch beyond export.parity_tolerance. With export.quantize the
    int8 model (its accuracy beside fp32's) becomes the candidate's file."""
    return export_step(cfg, prepared, trained, run_dir)


@task(name="score-shipped", cache_policy=NO_CACHE)
def score_shipped(cfg: RunConfig, prepared: PreparedData, evaluation: Evaluation, exported: ExportResult) -> Evaluation:
    """The evaluation of model.onnx as it ships (evaluation itself when that is the checkpoint): the gate judges
    it, and the version records it with its decision threshold."""
    return shipped_evaluation(cfg, prepared, evaluation, Path(exported.path))


@task(name="challenge-production", cache_policy=NO_CACHE, **STORE_RETRIES)
def challenge_production(
    cfg: RunConfig, prepared: PreparedData, exported: ExportResult, production: str | None, run_dir: Path
) -> ChampionEval:
    """Candidate and `production` (as read before this task) through onnxruntime on this run's test split
    (validation without one)."""
    return challenge(open_registry(cfg), cfg, prepared, Path(exported.path), production, run_dir)


@task(name="measure-latency", cache_policy=NO_CACHE)
def measure_latency(cfg: RunConfig, prepared: PreparedData, exported: ExportResult) -> float:
    """Median onnxruntime ms per image (segmenter: per tile) over a fixed set of validation images."""
    return latency_step(cfg, prepared, Path(exported.path))


@task(name="gate", cache_policy=NO_CACHE)
def gate_model(
    cfg: RunConfig, shipped: Evaluation, exported: ExportResult, latency_ms: float, champion: ChampionEval
) -> GateReport:
    """Absolute, per-class, bias, cost, int8 and champion rules from cfg.gate, one row each. The metric rules
    judge the file that ships (score_shipped), on the test split when there is one."""
    size_mb = exported.size_bytes / 1e6
    candidate = Candidate(shipped.metrics, size_mb, latency_ms, exported.quantization, shipped.measured_on)
    return evaluate_gate(candidate, champion, cfg.gate)
