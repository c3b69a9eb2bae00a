"""What evaluating a model produced, for either task kind: the metrics, their JSON file and the plots."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ml.core.metrics import decision_threshold
from ml.evaluation.gate import scalar_metrics


@dataclass
class Evaluation:
    metrics: dict  # see ml.core.metrics.classification_metrics
    metrics_path: str
    plots: dict[str, str]  # name -> PNG path
    measured_on: str = ""  # what scored `metrics` when not the best checkpoint (ml.export.step.shipped_evaluation)

    @property
    def threshold(self) -> float | None:
        """A binary model's decision threshold chosen on the validation split (eval.decision); None: argmax."""
        return decision_threshold(self.metrics)

    def scalars(self) -> dict[str, float | None]:
        return scalar_metrics(self.metrics)

    def to_dict(self) -> dict:
        return asdict(self)
