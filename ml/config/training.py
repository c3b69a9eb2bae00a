"""What trains and how: augmentation, the network, the optimisation loop."""

from __future__ import annotations

import difflib
import functools
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ml.config.section import Section
from ml.core.torchvision_shim import ensure_torchvision

SEGMENT_LOSSES = ("bce", "dice", "focal", "edge")
# the networks ml.training.small_nets registers in timm (a later stage: named here, checked there by a test)
SMALL_NETS = ("vf_cnn_small", "resnet20_cifar")


@functools.cache
def timm_models() -> tuple[str, ...]:
    """timm's model names; imported on first use, so a config that is never checked does not load torch."""
    ensure_torchvision()
    import timm

    return tuple(timm.list_models())


def unknown_model(name: str) -> str | None:
    """None for a timm model (a pretrained tag like resnet18.a1_in1k included) or a small net; else why not,
    with the close names that exist."""
    if name in SMALL_NETS or name.split(".")[0] in timm_models():
        return None
    close = difflib.get_close_matches(name, (*SMALL_NETS, *timm_models()), n=5)
    return f"unknown model {name!r} (not in timm nor {list(SMALL_NETS)}); close names: {close}"


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
    # classify, model.head=pool: hflip, vflip and shift on whole batches of in-memory tensors in torch, not per
    # image through albumentations (several times faster on 28-32 px images); the other augmentations must be 0
    batch: bool = False

    @model_validator(mode="after")
    def _batch_takes_flips_and_shift_only(self) -> AugmentConfig:
        others = ("rotate", "scale", "brightness_contrast", "elastic", "grid_distortion", "clahe", "noise", "blur",
                  "coarse_dropout", "channel_shuffle")  # fmt: skip
        if self.batch and (used := [k for k in others if getattr(self, k)]):
            raise ValueError(f"augment.batch applies hflip, vflip and shift only; set {used} to 0 or batch=false")
        return self


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

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        """A mistyped name fails at config load (exit 2), not after validating the data and a retry."""
        if why := unknown_model(name):
            raise ValueError(why)
        return name


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    scheduler: Literal["cosine", "onecycle", "plateau", "none"] = "cosine"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # loss weights by class frequency (ml.training.samplers): balanced = inverse frequency; sqrt and effective
    # (Cui et al. 2019) weigh rare classes less steeply, for skews where balanced over-predicts them
    class_weights: Literal["none", "balanced", "sqrt", "effective"] = "none"
    sampler: Literal["shuffle", "weighted"] = "shuffle"  # weighted: classes drawn equally often (inverse frequency)
    early_stopping: int | None = Field(None, ge=1)  # patience in epochs without improvement
    # checked after every optimizer step (a run stops inside an epoch); cosine/OneCycle follow the time spent too
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
