"""One pydantic RunConfig per run: filled from a preset YAML plus dotted overrides.

    cfg = load_config("demo", ["train.epochs=2", "gate.min.accuracy=0.9"])

Presets in deployments/presets/<name>.yaml set only what differs from these defaults. Every model
forbids unknown keys, so a typo fails at once with pydantic's message, before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from ml.config.production import AlertConfig, LabelingConfig, MonitorConfig
from ml.config.section import Section
from ml.core.files import PROJECT_ROOT

PRESET_DIR = PROJECT_ROOT / "deployments" / "presets"
DEFAULT_STORE = "file://.visionflow"

# Metrics the evaluator produces for classifiers; gate rules may only name these.
CLASSIFIER_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "auroc", "loss")
# ... and for segmenters (ml.core.seg_metrics; `_post`: after eval.postprocess, reported beside the raw value).
SEGMENTER_METRICS = ("f1", "iou", "precision", "recall", "edge_iou", "loss") + tuple(
    f"{m}_post" for m in ("f1", "iou", "precision", "recall", "edge_iou")
)
SEGMENT_LOSSES = ("bce", "dice", "focal", "edge")
# train.monitor and gate.champion.metric when a config leaves them unset, by model.task
TASK_METRIC = {"classify": "macro_f1", "segment": "f1"}
PER_CLASS_METRICS = ("precision", "recall", "f1")


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
    """Generated dataset (demo and tests), written when data.root is missing: shapes as class folders, or
    pages (strokes and letters on textured paper, with exact masks) as images/ + masks/ (layout image_mask)."""

    kind: Literal["shapes", "pages"] = "shapes"
    classes: list[str] = ["circle", "square", "triangle", "cross"]  # shapes only
    per_class: int = Field(60, ge=2)  # images per class (pages: pages in all)
    size: int = Field(32, ge=16)  # side in px (pages: each side drawn from 0.75-1.25 x size)
    seed: int = 0


class ExpectConfig(Section):
    """Data-validation thresholds: expectations/*.json take them as GX suite parameters ({"$PARAMETER": name})."""

    min_per_class: int = Field(2, ge=1)  # images per class (segmentation: images in all)
    max_imbalance: float | None = Field(10.0, ge=1)  # largest / smallest class; None: no limit
    allowed_channels: list[Literal[1, 2, 3, 4]] | None = None  # channels as stored (1 grey, 3 RGB, 4 RGBA); None: any
    min_size: int | None = Field(None, ge=1)  # px, both sides of every image
    max_size: int | None = Field(None, ge=1)
    mask_foreground: tuple[float, float] = (0.0, 1.0)  # allowed foreground fraction of a non-empty mask
    max_empty_mask_share: float = Field(0.0, ge=0, le=1)  # share of masks without a foreground pixel
    allow_duplicates: bool = False  # same bytes twice in one split and class; across splits or labels always fails
    quarantine_unreadable: bool = False  # list unreadable files and continue without them instead of failing

    @model_validator(mode="after")
    def _ranges(self) -> ExpectConfig:
        lo, hi = self.mask_foreground
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"mask_foreground {self.mask_foreground} must be (min, max) with 0 <= min <= max <= 1")
        if self.min_size and self.max_size and self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} > max_size {self.max_size}")
        return self


class DataConfig(Section):
    root: Path = Path(".visionflow/data/demo")
    # image_mask: <root>/images/<id>.png|jpg with <root>/masks/<id>.png; class_folders also pick up <root>/masks/
    layout: Literal["class_folders", "npy_per_class", "manifest", "image_mask"] = "class_folders"
    manifest: str = "manifest.csv"  # for layout=manifest, relative to root
    classes: list[str] | None = None  # subset and order; default: every class found, sorted
    binary_target: str | None = None  # target-vs-rest: this class against every other selected class
    image_size: int = Field(32, ge=8)  # classifiers train and predict at this size; segmenters at full size
    channels: Literal[1, 3] = 3
    # training crops (px): segmenters always; classifiers with model.head=map, cut from the image_size image
    crop_size: int = Field(512, ge=32, multiple_of=32)
    foreground_crop: float = Field(0.5, ge=0, le=1)  # share of crops centred on a mask (foreground) pixel
    crops_per_image: int = Field(8, ge=1)  # random crops of each training image per epoch
    val_fraction: float = Field(0.2, gt=0, lt=1)  # share of each class's groups in val (by hash: see ml.data.splits)
    test_fraction: float = Field(0.0, ge=0, lt=1)  # share in a test split beside train/val; 0: none
    split_seed: int = 0
    group: GroupConfig = GroupConfig()
    synthetic: SyntheticConfig | None = None  # generate the dataset if root does not exist
    expect: ExpectConfig = ExpectConfig()
    cache_dir: Path | None = None  # profile cache (profile-<name>.parquet); default: <storage.workdir>/../cache

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            total = f"val_fraction {self.val_fraction} + test_fraction {self.test_fraction}"
            raise ValueError(f"{total} must be < 1 (train needs a share)")
        return self


class AugmentConfig(Section):
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.0, ge=0, le=1)
    rotate: float = Field(0.0, ge=0, le=180)  # degrees, +-
    shift: float = Field(0.0, ge=0, le=0.5)  # fraction of the side, +-
    scale: float = Field(0.0, ge=0, le=0.5)  # zoom, +-
    brightness_contrast: float = Field(0.0, ge=0, le=1)  # limit for both
    # probabilities of the "manufacturing" distortions (classifiers and segmenters alike)
    elastic: float = Field(0.0, ge=0, le=1)  # elastic warp
    grid_distortion: float = Field(0.0, ge=0, le=1)  # a lens-like grid warp
    clahe: float = Field(0.0, ge=0, le=1)  # local contrast equalisation (CLAHE)
    noise: float = Field(0.0, ge=0, le=1)  # Gaussian sensor noise
    blur: float = Field(0.0, ge=0, le=1)  # Gaussian blur (focus)
    coarse_dropout: float = Field(0.0, ge=0, le=1)  # 1-4 rectangles of 5-15% of the side (occlusion)
    channel_shuffle: float = Field(0.0, ge=0, le=1)  # permute RGB: for labels that do not depend on the hue
    fill: int = Field(0, ge=0, le=255)  # the background the warps uncover and dropout paints (255: white paper)


class ModelConfig(Section):
    task: Literal["classify", "segment"] = "classify"  # segment: binary masks, a U-Net (smp) on a timm encoder
    name: str = "resnet10t"  # any timm model name (segment: the U-Net's encoder, e.g. resnet18)
    # segment: U-Net decoder widths, deepest first; 3-5 of them (= encoder stages used)
    decoder_channels: list[int] = Field([256, 128, 64, 32, 16], min_length=3, max_length=5)
    pretrained: bool = False  # no downloads on this machine; keep the option for users
    # classify, binary: pool = timm's pooled head; map = a logit map over the last two encoder stages whose
    # maximum is the image's logit: trains on data.crop_size crops, learns from masks (train.mask_loss) and
    # finds defects a few pixels wide that a pooled head averages away
    head: Literal["pool", "map"] = "pool"
    drop_rate: float = Field(0.0, ge=0, lt=1)


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    scheduler: Literal["cosine", "onecycle", "plateau", "none"] = "cosine"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = "none"
    sampler: Literal["shuffle", "weighted"] = "shuffle"  # weighted: classes drawn equally often (inverse frequency)
    early_stopping: int | None = Field(None, ge=1)  # patience in epochs without improvement
    # stop after the epoch that crosses this budget; cosine/OneCycle are shortened to end there
    time_budget_min: float | None = Field(None, gt=0)
    # segment: f1, iou or loss; auroc: threshold-free, for binary models whose threshold is set after (eval.decision)
    # unset: TASK_METRIC of model.task (macro_f1, or f1 for segment), resolved by RunConfig
    monitor: Literal["macro_f1", "accuracy", "auroc", "f1", "iou", "loss"] = "macro_f1"
    grad_clip: float | None = Field(None, gt=0)
    accumulate: int = Field(1, ge=1)  # optimizer step every N batches (effective batch = N x batch_size)
    # segment (and model.head=map's mask term): weighted sum of bce, dice, focal, edge
    loss: dict[str, float] = {"bce": 1.0, "dice": 1.0}
    mask_loss: float = Field(0.0, ge=0)  # model.head=map: weight of the mask term (train.loss) beside the class loss
    focal_gamma: float = Field(2.0, ge=0)  # focal terms (segment loss `focal`, classifier_loss=focal): (1 - p)^gamma
    # classify: ce = cross-entropy; focal = CE scaled by (1 - p_true)^focal_gamma (easy images count little);
    # class_weights act as per-class alpha and label_smoothing smooths the targets, for both
    classifier_loss: Literal["ce", "focal"] = "ce"
    mixup: float = Field(0.0, ge=0)  # classify: MixUp alpha; mixing weight ~ Beta(alpha, alpha) (0.2-0.4 usual); 0: off
    mixup_prob: float = Field(1.0, gt=0, le=1)  # share of training batches that are mixed (when mixup > 0)
    # decay of an exponential moving average of the weights, updated every optimizer step (0.99-0.999 usual);
    # validation, the best checkpoint and the export use the average: steadier than the last step's weights
    ema: float | None = Field(None, gt=0, lt=1)
    amp: bool = True  # used on CUDA only
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # data-parallel ranks (DDP, ml.training.distributed): GPUs on CUDA, processes on CPU; batch_size is per device
    devices: int = Field(1, ge=1)
    # CUDA device indices to train on, one per device; unset: the train task claims free ones (ml.training.gpus)
    gpus: list[int] | None = None
    seed: int = 0
    deterministic: bool = False
    num_workers: int = Field(0, ge=0)
    resume: bool = True  # continue from the run's last checkpoint if one exists
    progress: bool = True
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _one_gpu_per_device(self) -> TrainConfig:
        if self.gpus is not None and (len(self.gpus) != self.devices or len(set(self.gpus)) != len(self.gpus)):
            raise ValueError(f"gpus {self.gpus}: {self.devices} distinct CUDA indices, one per train.devices")
        if self.gpus is not None and min(self.gpus) < 0:
            raise ValueError(f"gpus {self.gpus}: CUDA indices are >= 0")
        return self

    @field_validator("loss")
    @classmethod
    def _known_losses(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(SEGMENT_LOSSES))
        if unknown or not weights or any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ValueError(f"loss {weights}: weights >= 0, not all 0, for names in {list(SEGMENT_LOSSES)}")
        return weights


class PostprocessConfig(Section):
    close: int = Field(0, ge=0)  # morphological closing with an ellipse of this side (px); 0: none
    min_component: int = Field(0, ge=0)  # drop connected foreground components smaller than this (px); 0: none


class EvalConfig(Section):
    """Segmentation: whole images predicted by overlapping tiles, blended with a Hann window."""

    tile: int | None = Field(None, ge=32, multiple_of=32)  # tile side (px); default data.crop_size
    overlap: float = Field(0.25, ge=0, lt=1)  # share of a tile shared with its neighbour
    batch: int = Field(4, ge=1)  # tiles per forward pass
    threshold: float = Field(0.5, gt=0, lt=1)  # on sigmoid(logit)
    boundary: int = Field(2, ge=1)  # edge IoU: width (px) of the band inside each mask's contour
    postprocess: PostprocessConfig | None = None  # reported beside the raw metrics as <metric>_post
    overlays: int = Field(4, ge=0)  # validation images drawn as overlay PNGs
    # binary classifiers: argmax, or a threshold on P(positive class) chosen on the validation split (f1: F1-optimal;
    # precision: best recall at target_precision), stored with the version and used by scoring
    decision: Literal["argmax", "f1", "precision"] = "argmax"
    target_precision: float = Field(0.95, gt=0, le=1)
    # classify: test-time augmentation; probabilities averaged over the image and each listed flip, reported as
    # <metric>_tta beside the plain <metric> (both on the validation split); []: off
    tta: list[Literal["hflip", "vflip"]] = []

    @field_validator("tta")
    @classmethod
    def _distinct_views(cls, views: list[str]) -> list[str]:
        if len(set(views)) != len(views):
            raise ValueError(f"tta {views}: each flip at most once")
        return views


class ChampionConfig(Section):
    """Challenger vs champion: the candidate and the production model, both run through onnxruntime on this
    run's validation split, compared on `metric` (for `loss`, lower is better)."""

    enabled: bool = True
    metric: str = "macro_f1"  # unset: TASK_METRIC of model.task (macro_f1, or f1 for segment), resolved by RunConfig
    tolerance: float = Field(0.01, ge=0)  # the candidate may be this much worse than production
    min_delta: float | None = Field(None, gt=0)  # if set, the candidate must beat production by this much

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        if metric not in CLASSIFIER_METRICS + SEGMENTER_METRICS:
            raise ValueError(f"unknown metric {metric!r}; known: {list(CLASSIFIER_METRICS + SEGMENTER_METRICS)}")
        return metric


class GateConfig(Section):
    """Every rule must pass before `production` moves. `min.accuracy: 0.9` means accuracy >= 0.9, `max.loss: 0.5`
    loss <= 0.5, `per_class_min.recall: 0.85` every class's recall >= 0.85 (on the validation split)."""

    min: dict[str, float] = {}
    max: dict[str, float] = {}
    per_class_min: dict[str, float] = {}  # keys from PER_CLASS_METRICS
    max_class_share: float | None = Field(None, gt=0, le=1)  # no class takes more of the predictions
    max_model_mb: float | None = Field(None, gt=0)  # ONNX file size, MB = 10^6 bytes
    max_latency_ms: float | None = Field(None, gt=0)  # onnxruntime, one image at a time, one CPU thread
    latency_images: int = Field(32, ge=1)  # the first N validation images are timed; the median counts
    # export.quantize: int8 accuracy may be at most this below fp32's (0.01 = 1 point; onnxruntime, validation split)
    max_quantized_drop: float | None = Field(None, ge=0)
    champion: ChampionConfig = ChampionConfig()

    @field_validator("min", "max")
    @classmethod
    def _known_metrics(cls, rules: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(rules) - set(CLASSIFIER_METRICS + SEGMENTER_METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {list(CLASSIFIER_METRICS + SEGMENTER_METRICS)}")
        return rules

    @field_validator("per_class_min")
    @classmethod
    def _known_per_class(cls, rules: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(rules) - set(PER_CLASS_METRICS))
        if unknown:
            raise ValueError(f"unknown per-class metric(s) {unknown}; known: {list(PER_CLASS_METRICS)}")
        return rules


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
    """Where versions go, and how long an S3 request may wait (ml.storage.worst_case_wait_s)."""

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
