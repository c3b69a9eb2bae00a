"""Albumentations pipelines built from config (albumentations 2.x argument names only)."""

from __future__ import annotations

import albumentations as A
import cv2

from ml.config.training import AugmentConfig


def _affine(aug: AugmentConfig, border_mode: int) -> list[A.BasicTransform]:
    """Rotate / shift / zoom in one warp (borders of aug.fill, or mirrored ones for pages)."""
    if not (aug.rotate or aug.shift or aug.scale):
        return []
    warp = A.Affine(
        scale=(1 - aug.scale, 1 + aug.scale),
        translate_percent=(-aug.shift, aug.shift),
        rotate=(-aug.rotate, aug.rotate),
        border_mode=border_mode,
        fill=aug.fill,
        p=1.0,
    )
    return [warp]


def _flips(aug: AugmentConfig) -> list[A.BasicTransform]:
    return [f(p=p) for f, p in ((A.HorizontalFlip, aug.hflip), (A.VerticalFlip, aug.vflip)) if p]


def _distortions(aug: AugmentConfig, border_mode: int) -> list[A.BasicTransform]:
    """Warps (elastic, grid), then photometry (channel shuffle, CLAHE, brightness/contrast, noise, blur), then
    occlusion."""
    limit, border = aug.brightness_contrast, {"border_mode": border_mode, "fill": aug.fill}
    candidates = [
        (aug.elastic, lambda p: A.ElasticTransform(alpha=40, sigma=6, **border, p=p)),
        (aug.grid_distortion, lambda p: A.GridDistortion(num_steps=5, distort_limit=0.3, **border, p=p)),
        (aug.channel_shuffle, lambda p: A.ChannelShuffle(p=p)),
        (aug.clahe, lambda p: A.CLAHE(clip_limit=2.0, p=p)),
        (0.5 if limit else 0.0, lambda p: A.RandomBrightnessContrast(limit, limit, p=p)),
        (aug.noise, lambda p: A.GaussNoise(std_range=(0.02, 0.08), p=p)),
        (aug.blur, lambda p: A.GaussianBlur(blur_limit=(3, 5), p=p)),
        (aug.coarse_dropout, lambda p: A.CoarseDropout((1, 4), (0.05, 0.15), (0.05, 0.15), fill=aug.fill, p=p)),
    ]
    return [make(p) for p, make in candidates if p]


def build_transforms(aug: AugmentConfig, image_size: int, train: bool, seed: int | None = None) -> A.Compose:
    """Resize always; random geometry and photometry only for training. Output stays uint8 HxWxC. `seed`
    (train.seed) makes the draws repeat run to run: albumentations keeps its own random state."""
    steps: list[A.BasicTransform] = [A.Resize(image_size, image_size)]
    if train:
        steps += _affine(aug, cv2.BORDER_CONSTANT) + _flips(aug) + _distortions(aug, cv2.BORDER_CONSTANT)
    return A.Compose(steps, seed=seed)


def build_mask_transforms(aug: AugmentConfig, seed: int | None = None) -> A.Compose:
    """Training augmentation of an image crop and its mask together (geometry applies to both; the mask is
    resampled nearest-neighbour and stays binary). Borders are mirrored: a black wedge is not paper."""
    steps = _flips(aug) + _affine(aug, cv2.BORDER_REFLECT_101) + _distortions(aug, cv2.BORDER_REFLECT_101)
    return A.Compose(steps, seed=seed)
