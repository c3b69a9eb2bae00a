"""int8 ONNX (onnxruntime.quantization), judged by its accuracy against the fp32 original on the validation split.

    exported = quantize_classifier(cfg, prepared, exported)   # export.quantize: dynamic | static

    python -m flows.retrain --preset demo --set export.quantize=static --set gate.max_quantized_drop=0.01

dynamic: int8 weights, activations quantized at run time (ConvInteger / MatMulInteger). static: QDQ, int8 weights
per channel and uint8 activations whose ranges come from `export.calibration_images` training images
(`export.calibration_method`: min/max, a percentile, or entropy). `export.first_conv_float` leaves the
convolutions that read the image in fp32.
The graph is pre-processed first (quant_pre_process: ONNX shape inference and fusions). Softmax stays float, so
`probs` still sums to 1. Parity with torch no longer applies: both files are scored by
ml.export.onnx_eval.evaluate_on_split
(the champion's code: same split, same decision rule) and gate.max_quantized_drop bounds the accuracy lost. The
int8 file becomes the candidate's model.onnx; the fp32 file stays in the run directory.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from ml.config.run import RunConfig
from ml.core.files import sha256_file
from ml.data.prepare import PreparedData
from ml.export.onnx import ExportResult
from ml.export.onnx_eval import evaluate_on_split, to_input
from ml.training.classifier import load_split

FLOAT_OPS = ("Softmax", "LogSoftmax", "ReduceLogSumExp")  # the probability head (and TTA's averaging) stays float
CALIBRATION = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}


class ImageCalibration(CalibrationDataReader):
    """Feeds float32 N x C x H x W images to the static calibrator in batches."""

    def __init__(self, images: np.ndarray, input_name: str = "image", batch_size: int = 16):
        self.batches = iter([{input_name: images[i : i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantize_onnx(
    src: Path,
    dst: Path,
    mode: Literal["dynamic", "static"],
    calibration: np.ndarray | None = None,
    method: Literal["minmax", "percentile", "entropy"] = "minmax",
    first_conv_float: bool = False,
) -> Path:
    """Write the int8 model of `src` to `dst` atomically; static needs `calibration` (float32 N x C x H x W),
    whose activation ranges `method` reads. `first_conv_float` leaves the convolutions that read the image in fp32."""
    if mode == "static" and (calibration is None or not len(calibration)):
        raise ValueError(f"{src}: static quantization needs calibration images")
    pre, tmp = dst.with_suffix(".pre.onnx"), dst.with_suffix(".onnx.tmp")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        keep = [n.name for n in graph.node if n.op_type in FLOAT_OPS] + (first_convs(graph) if first_conv_float else [])
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(tmp), weight_type=QuantType.QInt8, nodes_to_exclude=keep)
        else:
            quantize_static(
                str(pre),
                str(tmp),
                ImageCalibration(calibration, graph.input[0].name),
                calibrate_method=CALIBRATION[method],
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep,
            )
        os.replace(tmp, dst)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return dst


def first_convs(graph: onnx.GraphProto) -> list[str]:
    """Conv nodes with no Conv upstream: those that read the image (one per view in a flip-TTA graph). Their few
    weights see raw pixels, where int8 loses the most accuracy for the least size."""
    downstream_of_conv: set[str] = set()
    found = []
    for node in graph.node:  # ONNX keeps nodes in topological order
        after_conv = any(name in downstream_of_conv for name in node.input)
        if node.op_type == "Conv" and not after_conv:
            found.append(node.name)
        if after_conv or node.op_type == "Conv":
            downstream_of_conv.update(node.output)
    return found


def calibration_images(cfg: RunConfig, prepared: PreparedData) -> np.ndarray:
    """A seeded sample of `export.calibration_images` training images, unaugmented, as the model's input."""
    images, _ = load_split(cfg, prepared, "train")
    n = min(cfg.export.calibration_images, len(images))
    pick = np.sort(np.random.default_rng(cfg.train.seed).choice(len(images), n, replace=False))
    return to_input(images[pick])


def _scored(path: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
    }


def quantize_classifier(cfg: RunConfig, prepared: PreparedData, exported: ExportResult) -> ExportResult:
    """The int8 model of the exported fp32 file as the export result (published as model.onnx), with both files'
    sizes and validation accuracies in `quantization` (gate.max_quantized_drop reads `accuracy_drop`)."""
    mode = cfg.export.quantize
    if mode == "none":
        raise ValueError("export.quantize=none: nothing to quantize")
    fp32 = Path(exported.path)
    calibration = calibration_images(cfg, prepared) if mode == "static" else None
    method = cfg.export.calibration_method
    int8 = fp32.with_name(f"{fp32.stem}-int8.onnx")
    quantize_onnx(fp32, int8, mode, calibration, method, cfg.export.first_conv_float)
    before, after = evaluate_on_split(cfg, prepared, fp32), evaluate_on_split(cfg, prepared, int8)
    record = {
        "mode": mode,
        "calibration_images": 0 if calibration is None else len(calibration),
        "calibration_method": method if calibration is not None else None,
        "first_conv_float": cfg.export.first_conv_float,
        "fp32": _scored(fp32, before),
        "int8": _scored(int8, after),
        "accuracy_drop": before["accuracy"] - after["accuracy"],  # > 0: int8 is worse
        "val_images": after["n"],
        "published": "int8",
    }
    size = record["int8"]["size_bytes"]
    return replace(exported, path=str(int8), sha256=record["int8"]["sha256"], size_bytes=size, quantization=record)
