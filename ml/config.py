"""One pydantic RunConfig per run: filled from a preset YAML plus dotted overrides.

    cfg = load_config("demo", ["train.epochs=2", "gate.min.accuracy=0.9"])

Presets in deployments/presets/<name>.yaml set only what differs from these defaults. Every model
forbids unknown keys, so a typo fails at once with pydantic's message, before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PRESET_DIR = Path(__file__).resolve().parent.parent / "deployments" / "presets"
DEFAULT_STORE = "file://.visionflow"

# Metrics the evaluator produces for classifiers; gate rules may only name these.
CLASSIFIER_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "auroc", "loss")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GroupConfig(Section):
    """How near-duplicates are kept on one side of a split."""

    by: Literal["none", "column", "regex", "tile"] = "none"
    column: str | None = None  # manifest column, for by=column
    pattern: str | None = None  # regex on the file name; group = first capture group (or whole match)
    tile_gap: int = 200  # by=tile: frames of one type within this many numbers form one tile

    @model_validator(mode="after")
    def _needs_argument(self) -> GroupConfig:
        if self.by == "column" and not self.column:
            raise ValueError("group.by=column needs group.column")
        if self.by == "regex" and not self.pattern:
            raise ValueError("group.by=regex needs group.pattern")
        return self


class SyntheticConfig(Section):
    """Generated shapes dataset (demo and tests); written as class folders when data.root is missing."""

    classes: list[str] = ["circle", "square", "triangle", "cross"]
    per_class: int = Field(60, ge=2)
    size: int = Field(32, ge=16)
    seed: int = 0


class DataConfig(Section):
    root: Path = Path(".visionflow/data/demo")
    layout: Literal["class_folders", "npy_per_class", "manifest"] = "class_folders"
    manifest: str = "manifest.csv"  # for layout=manifest, relative to root
    classes: list[str] | None = None  # subset and order; default: every class found, sorted
    image_size: int = Field(32, ge=8)
    channels: Literal[1, 3] = 3
    val_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 0
    group: GroupConfig = GroupConfig()
    synthetic: SyntheticConfig | None = None  # generate the dataset if root does not exist


class AugmentConfig(Section):
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    rotate: float = Field(0.0, ge=0, le=180)  # degrees, +-
    shift: float = Field(0.0, ge=0, le=0.5)  # fraction of the side, +-
    scale: float = Field(0.0, ge=0, le=0.5)  # zoom, +-
    brightness_contrast: float = Field(0.0, ge=0, le=1)  # limit for both


class ModelConfig(Section):
    name: str = "resnet10t"  # any timm model name
    pretrained: bool = False  # no downloads on this machine; keep the option for users
    drop_rate: float = Field(0.0, ge=0, lt=1)


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    scheduler: Literal["cosine", "onecycle", "plateau", "none"] = "cosine"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = "none"
    early_stopping: int | None = Field(None, ge=1)  # patience in epochs without improvement
    monitor: Literal["macro_f1", "accuracy", "loss"] = "macro_f1"
    grad_clip: float | None = Field(None, gt=0)
    amp: bool = True  # used on CUDA only
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    seed: int = 0
    deterministic: bool = False
    num_workers: int = Field(0, ge=0)
    resume: bool = True  # continue from the run's last checkpoint if one exists
    progress: bool = True
    augment: AugmentConfig = AugmentConfig()


class GateConfig(Section):
    """Absolute thresholds: `min.accuracy: 0.9` means accuracy >= 0.9; `max.loss: 0.5` means loss <= 0.5."""

    min: dict[str, float] = {}
    max: dict[str, float] = {}

    @field_validator("min", "max")
    @classmethod
    def _known_metrics(cls, rules: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(rules) - set(CLASSIFIER_METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {list(CLASSIFIER_METRICS)}")
        return rules


class ExportConfig(Section):
    opset: int = Field(17, ge=13)
    parity_tolerance: float = Field(1e-4, gt=0)
    parity_batch: int = Field(16, ge=1)


class StorageConfig(Section):
    uri: str = DEFAULT_STORE  # file://path or s3://bucket/prefix
    endpoint_url: str | None = None  # S3-compatible server; default from AWS_ENDPOINT_URL(_S3)
    workdir: Path = Path(".visionflow/runs")  # local scratch: checkpoints, plots, the ONNX file

    @field_validator("uri")
    @classmethod
    def _scheme(cls, uri: str) -> str:
        if not uri.startswith(("file://", "s3://")):
            raise ValueError(f"store URI must start with file:// or s3://, got {uri!r}")
        return uri


class RunConfig(Section):
    name: str = Field("demo", pattern=r"^[a-z0-9][a-z0-9-]*$")  # the model's name in the registry
    preset: str | None = None
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    gate: GateConfig = GateConfig()
    export: ExportConfig = ExportConfig()
    storage: StorageConfig = StorageConfig()


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no preset {name!r} ({path}); known presets: {known}")
    return path


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=v` -> ("a.b", v) with v parsed as YAML, so numbers, booleans and lists get their types."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r} is not of the form key.path=value")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys into a nested dict (a copy); intermediate dicts are created as needed."""
    out = _deep_copy(base)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {dotted!r}: {part!r} is a value, not a section")
            node = child
        node[leaf] = value
    return out


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def load_config(preset: str, overrides: dict[str, Any] | list[str] | None = None) -> RunConfig:
    """Preset YAML + overrides -> validated RunConfig (raises pydantic.ValidationError on bad input)."""
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    raw = yaml.safe_load(preset_path(preset).read_text()) or {}
    raw.setdefault("name", preset)
    raw["preset"] = preset
    return RunConfig.model_validate(apply_overrides(raw, overrides or {}))
