"""Albumentations pipelines built from config (albumentations 2.x argument names only)."""

from __future__ import annotations

import albumentations as A
import cv2

from ml.config import AugmentConfig


def build_transforms(aug: AugmentConfig, image_size: int, train: bool) -> A.Compose:
    """Resize always; random geometry and photometry only for training. Output stays uint8 HxWxC."""
    steps: list[A.BasicTransform] = [A.Resize(image_size, image_size)]
    if train:
        if aug.rotate or aug.shift or aug.scale:
            steps.append(
                A.Affine(
                    scale=(1 - aug.scale, 1 + aug.scale),
                    translate_percent=(-aug.shift, aug.shift),
                    rotate=(-aug.rotate, aug.rotate),
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    p=1.0,
                )
            )
        if aug.hflip:
            steps.append(A.HorizontalFlip(p=aug.hflip))
        if aug.vflip:
            steps.append(A.VerticalFlip(p=aug.vflip))
        if aug.brightness_contrast:
            steps.append(A.RandomBrightnessContrast(aug.brightness_contrast, aug.brightness_contrast, p=0.5))
    return A.Compose(steps)


def build_mask_transforms(aug: AugmentConfig) -> A.Compose:
    """Training augmentation of an image crop and its mask together (geometry applies to both; the mask is
    resampled nearest-neighbour and stays binary). Borders are mirrored: a black wedge is not paper."""
    steps: list[A.BasicTransform] = []
    if aug.hflip:
        steps.append(A.HorizontalFlip(p=aug.hflip))
    if aug.vflip:
        steps.append(A.VerticalFlip(p=aug.vflip))
    if aug.rotate or aug.shift or aug.scale:
        steps.append(
            A.Affine(
                scale=(1 - aug.scale, 1 + aug.scale),
                translate_percent=(-aug.shift, aug.shift),
                rotate=(-aug.rotate, aug.rotate),
                border_mode=cv2.BORDER_REFLECT_101,
                p=1.0,
            )
        )
    if aug.elastic:
        steps.append(A.ElasticTransform(alpha=40, sigma=6, border_mode=cv2.BORDER_REFLECT_101, p=aug.elastic))
    if aug.brightness_contrast:
        steps.append(A.RandomBrightnessContrast(aug.brightness_contrast, aug.brightness_contrast, p=0.5))
    if aug.blur:
        steps.append(A.GaussianBlur(blur_limit=(3, 5), p=aug.blur))
    return A.Compose(steps)
