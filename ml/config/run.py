"""One pydantic RunConfig per run: filled from a preset YAML plus dotted overrides.

    cfg = load_config("demo", ["train.epochs=2", "gate.min.accuracy=0.9"])

Presets in deployments/presets/<name>.yaml set only what differs from these defaults. Every model
forbids unknown keys, so a typo fails at once with pydantic's message, before any work starts.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, model_validator

from ml.config.data import DataConfig
from ml.config.evaluation import CLASSIFIER_METRICS, SEGMENTER_METRICS, EvalConfig, GateConfig
from ml.config.production import AlertConfig, LabelingConfig, MonitorConfig, parse_window
from ml.config.publishing import ExportConfig, StorageConfig
from ml.config.retention import RetentionConfig
from ml.config.section import Section
from ml.config.training import ModelConfig, TrainConfig
from ml.config.tune import TuneConfig
from ml.core.files import PROJECT_ROOT

PRESET_DIR = PROJECT_ROOT / "deployments" / "presets"

# train.monitor and gate.champion.metric when a config leaves them unset, by model.task
TASK_METRIC = {"classify": "macro_f1", "segment": "f1"}


class RunConfig(Section):
    name: str = Field("demo", pattern=r"^[a-z0-9][a-z0-9-]*$")  # the model's name in the registry
    preset: str | None = None
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    gate: GateConfig = GateConfig()
    export: ExportConfig = ExportConfig()
    storage: StorageConfig = StorageConfig()
    alerts: AlertConfig = AlertConfig()
    eval: EvalConfig = EvalConfig()
    monitor: MonitorConfig = MonitorConfig()
    labeling: LabelingConfig = LabelingConfig()
    retention: RetentionConfig = RetentionConfig()
    tune: TuneConfig = TuneConfig()

    @model_validator(mode="after")
    def _task_metric_defaults(self) -> RunConfig:
        """train.monitor and gate.champion.metric a config leaves unset follow model.task, so a segmentation
        config need not restate f1 for both; the resolved name is what is saved and shown."""
        metric = TASK_METRIC[self.model.task]
        if "monitor" not in self.train.model_fields_set:
            self.train.monitor = metric
        if "metric" not in self.gate.champion.model_fields_set:
            self.gate.champion.metric = metric
        return self

    @model_validator(mode="after")
    def _tune_keys_exist(self) -> RunConfig:
        """tune.params names config fields (a typo fails at load, not as a trial's error)."""
        wrong = [k for k in self.tune.params if not _is_field(RunConfig, k)]
        if wrong:
            raise ValueError(f"tune.params {wrong}: no such config key")
        return self

    @model_validator(mode="after")
    def _logs_outlive_the_window(self) -> RunConfig:
        """The monitor compares the last monitor.window of the prediction log: retention must not delete it."""
        if timedelta(days=self.retention.logs_days) < parse_window(self.monitor.window):
            raise ValueError(
                f"retention.logs_days {self.retention.logs_days:g} < monitor.window {self.monitor.window}: "
                "the monitor would find its window deleted"
            )
        return self

    @model_validator(mode="after")
    def _metrics_of_the_task(self) -> RunConfig:
        """Metric names (monitor, gate, champion) must be ones this task's evaluator produces."""
        known = SEGMENTER_METRICS if self.model.task == "segment" else CLASSIFIER_METRICS
        named = {"train.monitor": [self.train.monitor], "gate.champion.metric": [self.gate.champion.metric]}
        named |= {"gate.min": list(self.gate.min), "gate.max": list(self.gate.max)}
        for key, names in named.items():
            wrong = [n for n in names if n not in known]
            if wrong:
                raise ValueError(f"{key}: {wrong} not produced for model.task={self.model.task}; known: {list(known)}")
        if self.model.task == "segment" and (self.gate.per_class_min or self.gate.max_class_share):
            raise ValueError("gate.per_class_min and gate.max_class_share are classifier rules (model.task=segment)")
        if self.model.task == "segment" and self.train.sampler != "shuffle":
            raise ValueError("train.sampler=weighted balances classes; segmenters use data.foreground_crop")
        post = [n for names in named.values() for n in names if n.endswith("_post")]
        if post and self.eval.postprocess is None:
            raise ValueError(f"{post} need eval.postprocess (e.g. {{close: 3, min_component: 20}})")
        return self

    @model_validator(mode="after")
    def _classifier_techniques(self) -> RunConfig:
        """Focal loss, MixUp, TTA and int8 export are classifier options; some need another option set."""
        if self.model.task == "segment":
            used = {
                "train.classifier_loss=focal": self.train.classifier_loss == "focal",
                "train.mixup": self.train.mixup > 0,
                "eval.tta": bool(self.eval.tta),
                "export.tta": self.export.tta,
                "export.quantize": self.export.quantize != "none",
            }
            if any(used.values()):
                names = [k for k, v in used.items() if v]
                raise ValueError(f"{names}: classifier options (model.task=segment; its losses are train.loss)")
        if self.model.head == "map":
            self._check_map_head()
        elif self.train.mask_loss:
            raise ValueError("train.mask_loss trains a logit map against masks: set model.head=map")
        if self.export.tta and not self.eval.tta:
            raise ValueError("export.tta bakes eval.tta's flips into the graph: set eval.tta (e.g. [hflip])")
        if self.gate.max_quantized_drop is not None and self.export.quantize == "none":
            raise ValueError("gate.max_quantized_drop judges the int8 model: set export.quantize (dynamic or static)")
        return self

    def _check_map_head(self) -> None:
        d = self.data
        binary = d.binary_target is not None or (d.classes is not None and len(d.classes) == 2)
        if self.model.task != "classify" or not binary:
            raise ValueError(
                "model.head=map scores 'is there a defect anywhere': binary classifiers only (data.classes)"
            )
        if d.crop_size > d.image_size:
            raise ValueError(
                f"model.head=map trains on crops: data.crop_size {d.crop_size} > data.image_size {d.image_size}"
            )


def _is_field(section: type[BaseModel], dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    field = section.model_fields.get(head)
    if field is None or not rest:
        return field is not None
    sub = field.annotation
    return isinstance(sub, type) and issubclass(sub, BaseModel) and _is_field(sub, rest)


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
    overrides = overrides or {}
    if "data.root" in overrides and not any(k.split(".")[:2] == ["data", "synthetic"] for k in overrides):
        # a data.root of one's own is real data: a mistyped path must fail, not fill up with generated shapes
        overrides = {**overrides, "data.synthetic": None}
    return RunConfig.model_validate(apply_overrides(raw, overrides or {}))
