"""How a trained model is scored and judged: eval settings, the champion rule, the gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from ml.config.section import Section

# Metrics the evaluator produces for classifiers; gate rules may only name these.
CLASSIFIER_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "auroc", "loss")
# ... and for segmenters (ml.core.seg_metrics; `_post`: after eval.postprocess, reported beside the raw value).
SEGMENTER_METRICS = ("f1", "iou", "precision", "recall", "edge_iou", "loss") + tuple(
    f"{m}_post" for m in ("f1", "iou", "precision", "recall", "edge_iou")
)
PER_CLASS_METRICS = ("precision", "recall", "f1")


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
    """Challenger vs champion: the candidate and the production model, both run through onnxruntime on the
    validation images neither trained on (production's list is its version's training.txt), compared on `metric`
    (for `loss`, lower is better). Pass/fail reads the point difference; the bootstrap interval says how much of
    it is noise."""

    enabled: bool = True
    metric: str = "macro_f1"  # unset: TASK_METRIC of model.task (macro_f1, or f1 for segment), resolved by RunConfig
    tolerance: float = Field(0.01, ge=0)  # the candidate may be this much worse than production
    min_delta: float | None = Field(None, gt=0)  # if set, the candidate must beat production by this much
    min_images: int = Field(20, ge=1)  # fewer evaluation images left after exclusion: the rule refuses to judge
    bootstrap: int = Field(1000, ge=0)  # paired resamples of the images for the interval on the difference; 0: none
    confidence: float = Field(0.95, gt=0, lt=1)  # of that interval
    # a candidate that misses the rule by a difference its interval cannot tell from zero: "hold" keeps production
    # and completes the run without an alert (a nightly coin toss is no incident); "fail" fails and alerts as any rule
    on_noise: Literal["hold", "fail"] = "hold"

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

    @field_validator("min", "max", "per_class_min")
    @classmethod
    def _known_metrics(cls, rules: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        per_class = info.field_name == "per_class_min"
        known = PER_CLASS_METRICS if per_class else CLASSIFIER_METRICS + SEGMENTER_METRICS
        if unknown := sorted(set(rules) - set(known)):
            raise ValueError(f"unknown {'per-class ' if per_class else ''}metric(s) {unknown}; known: {list(known)}")
        return rules
