"""What one retrain's steps produced, in one record: the report and the version's metadata are written from it."""

from __future__ import annotations

from dataclasses import dataclass

from ml.data.prepare import PreparedData
from ml.evaluation.gate import ChampionEval, GateReport
from ml.evaluation.record import Evaluation
from ml.export.onnx import ExportResult
from ml.training.loop import TrainResult


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
