"""A classifier as ONNX: the best checkpoint (with export.tta, its flips inside), parity-checked."""

from __future__ import annotations

from pathlib import Path

import torch

from ml.config.run import RunConfig
from ml.data.prepare import PreparedData
from ml.export.onnx import ExportResult, export_checked
from ml.training.classifier import datasets
from ml.training.loop import TrainResult, load_trained


def export_classifier(cfg: RunConfig, prepared: PreparedData, train: TrainResult, run_dir: Path) -> ExportResult:
    """ONNX of the best checkpoint (with export.tta: eval.tta's flip averaging inside); parity checked on a real
    validation batch."""
    model, _ = load_trained(Path(train.best_checkpoint), cfg, "cpu")
    _, val_ds = datasets(cfg, prepared)
    n = min(cfg.export.parity_batch, len(val_ds))
    batch = torch.stack([val_ds[i][0] for i in range(n)])
    ex = cfg.export
    tta = cfg.eval.tta if ex.tta else []
    return export_checked(model, batch, run_dir / "model.onnx", ex.opset, ex.parity_tolerance, tta)
