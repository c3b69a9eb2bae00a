"""The evaluation step of any model.task: the kind's evaluator (EVALUATORS) on the best checkpoint.

evaluation = evaluate_step(cfg, prepared, trained, run_dir)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ml.config.run import RunConfig
from ml.core.kinds import KindRegistry
from ml.data.prepare import PreparedData
from ml.evaluation.classifier import evaluate_classifier
from ml.evaluation.record import Evaluation
from ml.evaluation.segmenter import evaluate_segmenter
from ml.training.loop import TrainResult
from ml.training.step import on_run_gpu

Evaluator = Callable[[RunConfig, PreparedData, TrainResult, Path], Evaluation]
EVALUATORS: KindRegistry[Evaluator] = KindRegistry(
    "evaluation", classify=evaluate_classifier, segment=evaluate_segmenter
)


def evaluate_step(cfg: RunConfig, prepared: PreparedData, trained: TrainResult, run_dir: Path) -> Evaluation:
    on_run_gpu(cfg)
    return EVALUATORS(cfg.model.task)(cfg, prepared, trained, run_dir)
