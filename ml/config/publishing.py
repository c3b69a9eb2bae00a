"""What ships and where: the ONNX export and the artifact store."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ml.config.section import Section

DEFAULT_STORE = "file://.visionflow"


class ExportConfig(Section):
    opset: int = Field(17, ge=13)
    parity_tolerance: float = Field(1e-4, gt=0)
    parity_batch: int = Field(16, ge=1)
    tta: bool = False  # classify: bake eval.tta's flip averaging into the graph (production scoring gets it)
    # classify: int8 via onnxruntime.quantization, published as model.onnx (fp32 kept in the run dir);
    # dynamic: int8 weights, activations quantized at run time; static: QDQ, activations calibrated on training images
    quantize: Literal["none", "dynamic", "static"] = "none"
    calibration_images: int = Field(64, ge=1)  # static: training images (seeded sample) fed to the calibrator
    # static: activation ranges from the extremes seen (minmax), the 99.999th percentile of |x| (percentile: one
    # outlier does not stretch the range) or the KL-optimal histogram cut (entropy)
    calibration_method: Literal["minmax", "percentile", "entropy"] = "minmax"
    # leave the convolution(s) reading the image in fp32: a few kB of weights, often most of the int8 loss
    first_conv_float: bool = False


class StorageConfig(Section):
    """Where versions go, and how long an S3 request may wait (ml.registry.s3_store.worst_case_wait_s)."""

    uri: str = DEFAULT_STORE  # file://path or s3://bucket/prefix
    endpoint_url: str | None = None  # S3-compatible server; default from AWS_ENDPOINT_URL(_S3)
    workdir: Path = Path(".visionflow/runs")  # local scratch: checkpoints, plots, the ONNX file
    # s3:// only; a hung endpoint fails a request within max_attempts x (connect + read) + ~3 s of backoff (57 s)
    connect_timeout_s: float = Field(3.0, gt=0)  # seconds to open the TCP connection, per attempt
    read_timeout_s: float = Field(15.0, gt=0)  # seconds to wait on any one socket read (an answer), per attempt
    max_attempts: int = Field(3, ge=1)  # botocore attempts per request, the first included (retry mode standard)

    @field_validator("uri")
    @classmethod
    def _scheme(cls, uri: str) -> str:
        if not uri.startswith(("file://", "s3://")):
            raise ValueError(f"store URI must start with file:// or s3://, got {uri!r}")
        return uri
