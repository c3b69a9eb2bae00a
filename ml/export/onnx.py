"""ONNX export with a dynamic batch, checked against torch in onnxruntime on real batches.

The graph takes `image` (N x C x H x W float in [0,1]) and returns `logits` and `probs`, so a consumer
needs no knowledge of the training normalisation; a timm classifier also returns `embedding`, its pooled
features before the classifier (N x F), which drift monitoring reduces and compares (ml.monitoring.reference).
A segmenter (ml.training.models.ImageSegmenter; no `embedding`) gets dynamic height and width too, `probs` =
sigmoid(logits) per pixel, and is checked on batches of different sizes.

With `tta` flips (export.tta) a classifier's graph runs the image and its flips as one batch: `probs` is their
mean, `logits` its log (ml.evaluation.tta.mean_probs_logits), `embedding` the views' mean. The parity check compares the
same averaging in torch. An int8 copy (export.quantize, ml.export.quantize) is judged by accuracy, not parity.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ml.core.files import sha256_file
from ml.evaluation.tta import flip_views, mean_probs_logits
from ml.training.models import ImageSegmenter, MapClassifier


class ParityError(RuntimeError):
    """onnxruntime's output differs from torch's by more than the allowed tolerance."""


def _embeds(model: nn.Module) -> bool:
    """Whether the model gives pooled features to export as `embedding` (timm heads and the map head do)."""
    return isinstance(model, MapClassifier) or hasattr(getattr(model, "backbone", None), "forward_head")


class _WithProbs(nn.Module):
    def __init__(self, model: nn.Module, tta: list[str] | tuple[str, ...] = ()):
        super().__init__()
        self.model, self.tta = model, tuple(tta)
        self.per_pixel = isinstance(model, ImageSegmenter)
        self.embeds = not self.per_pixel and _embeds(model)
        if self.per_pixel and self.tta:
            raise ValueError("flip TTA averages class probabilities: classifiers only, not a segmenter")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        views = 1 + len(self.tta)
        logits, embedding = self._logits_embedding(flip_views(x, self.tta) if self.tta else x)
        if self.tta:
            logits = mean_probs_logits(logits, views)
            embedding = None if embedding is None else embedding.unflatten(0, (views, -1)).mean(dim=0)
        probs = torch.sigmoid(logits) if self.per_pixel else torch.softmax(logits, dim=1)
        return (logits, probs) if embedding is None else (logits, probs, embedding)

    def _logits_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.logits_and_embedding(x) if self.embeds else (self.model(x), None)

    @property
    def output_names(self) -> list[str]:
        return ["logits", "probs", "embedding"] if self.embeds else ["logits", "probs"]


@dataclass
class ExportResult:
    path: str
    sha256: str
    size_bytes: int
    max_abs_diff: float
    opset: int
    outputs: list[str]  # logits, probs (+ embedding for a timm classifier)
    tta: list[str] = field(default_factory=list)  # flips averaged inside the graph (export.tta)
    quantization: dict | None = (
        None  # export.quantize: fp32 and int8 size/accuracy, which was published (ml.export.quantize)
    )

    def to_dict(self) -> dict:
        return asdict(self)


def export_onnx(
    model: nn.Module, sample: torch.Tensor, path: Path, opset: int = 17, tta: list[str] | tuple[str, ...] = ()
) -> Path:
    """Write the model (eval mode, CPU) to `path` atomically; batch is dynamic (a segmenter's H and W too)."""
    wrapped = _WithProbs(model.cpu().eval(), tta)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    axes = {0: "batch", 2: "height", 3: "width"} if wrapped.per_pixel else {0: "batch"}
    torch.onnx.export(
        wrapped,
        (sample.cpu(),),
        str(tmp),
        dynamo=False,
        opset_version=opset,
        input_names=["image"],
        output_names=wrapped.output_names,
        dynamic_axes={name: axes for name in ["image", *wrapped.output_names]},
    )
    os.replace(tmp, path)
    return path


class IncompatibleModel(ValueError):
    """The ONNX file cannot score these images: unreadable, other input shape, other classes, no `probs`."""


def open_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """CPU session (threads=0: onnxruntime's default); a file onnxruntime cannot load is IncompatibleModel."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors share no base class below Exception
        raise IncompatibleModel(f"{path}: onnxruntime cannot load it: {e}") from e


def max_abs_diff(path: Path, model: nn.Module, batch: torch.Tensor, tta: list[str] | tuple[str, ...] = ()) -> float:
    """Largest |torch - onnxruntime| over every output (logits, probs, embedding) for `batch`."""
    with torch.no_grad():
        expected = [t.numpy() for t in _WithProbs(model.cpu().eval(), tta)(batch.cpu())]
    got = open_session(path).run(None, {"image": batch.cpu().numpy().astype(np.float32)})
    return float(max(np.max(np.abs(e - g)) for e, g in zip(expected, got, strict=True)))


def export_checked(
    model: nn.Module,
    batch: torch.Tensor | list[torch.Tensor],
    path: Path,
    opset: int,
    tolerance: float,
    tta: list[str] | tuple[str, ...] = (),
) -> ExportResult:
    """Export, then fail (and remove the file) if onnxruntime disagrees with torch beyond `tolerance` on any
    of the batches (several: e.g. two image sizes for a segmenter; the first one's first image is traced)."""
    batches = [batch] if isinstance(batch, torch.Tensor) else batch
    export_onnx(model, batches[0][:1], path, opset, tta)
    diff = max(max_abs_diff(path, model, b, tta) for b in batches)
    if not diff <= tolerance:
        path.unlink(missing_ok=True)
        raise ParityError(f"{path}: onnxruntime differs from torch by {diff:.3g} > tolerance {tolerance:g}")
    outputs = [o.name for o in open_session(path).get_outputs()]
    return ExportResult(str(path), sha256_file(path), path.stat().st_size, diff, opset, outputs, list(tta))
