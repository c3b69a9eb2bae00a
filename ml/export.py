"""ONNX export with a dynamic batch, checked against torch in onnxruntime on a real batch.

The graph takes `image` (N x C x H x W float in [0,1]) and returns `logits` and `probs`, so a consumer
needs no knowledge of the training normalisation.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ml.storage import sha256_file


class ParityError(RuntimeError):
    """onnxruntime's output differs from torch's by more than the allowed tolerance."""


class _WithProbs(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


@dataclass
class ExportResult:
    path: str
    sha256: str
    size_bytes: int
    max_abs_diff: float
    opset: int

    def to_dict(self) -> dict:
        return asdict(self)


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path, opset: int = 17) -> Path:
    """Write the model (eval mode, CPU) to `path` atomically; batch is the one dynamic axis."""
    wrapped = _WithProbs(model.cpu().eval())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    torch.onnx.export(
        wrapped,
        (sample.cpu(),),
        str(tmp),
        dynamo=False,
        opset_version=opset,
        input_names=["image"],
        output_names=["logits", "probs"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "probs": {0: "batch"}},
    )
    os.replace(tmp, path)
    return path


def onnx_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def max_abs_diff(path: Path, model: nn.Module, batch: torch.Tensor) -> float:
    """Largest |torch - onnxruntime| over logits and probs for `batch`."""
    with torch.no_grad():
        expected = [t.numpy() for t in _WithProbs(model.cpu().eval())(batch.cpu())]
    got = onnx_session(path).run(None, {"image": batch.cpu().numpy().astype(np.float32)})
    return float(max(np.max(np.abs(e - g)) for e, g in zip(expected, got, strict=True)))


def export_checked(model: nn.Module, batch: torch.Tensor, path: Path, opset: int, tolerance: float) -> ExportResult:
    """Export, then fail (and remove the file) if onnxruntime disagrees with torch beyond `tolerance`."""
    export_onnx(model, batch[:1], path, opset)
    diff = max_abs_diff(path, model, batch)
    if not diff <= tolerance:
        path.unlink(missing_ok=True)
        raise ParityError(f"{path}: onnxruntime differs from torch by {diff:.3g} > tolerance {tolerance:g}")
    return ExportResult(str(path), sha256_file(path), path.stat().st_size, diff, opset)
