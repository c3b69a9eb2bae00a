"""Augmentation pipelines from config: every option becomes its albumentations 2.x transform, images keep
their size, dtype and channels, masks stay binary."""

import numpy as np
import pytest

from ml.config.training import AugmentConfig
from ml.training.augment import build_mask_transforms, build_transforms

ALL_ON = AugmentConfig(
    hflip=0.5, vflip=0.5, rotate=10, shift=0.1, scale=0.1, brightness_contrast=0.2,
    elastic=1, grid_distortion=1, clahe=1, noise=1, blur=1, coarse_dropout=1, channel_shuffle=1,
)  # fmt: skip
NAMES = {"Affine", "HorizontalFlip", "VerticalFlip", "ElasticTransform", "GridDistortion", "CLAHE",
         "RandomBrightnessContrast", "GaussNoise", "GaussianBlur", "CoarseDropout", "ChannelShuffle"}  # fmt: skip


def _names(compose) -> set[str]:
    return {type(t).__name__ for t in compose.transforms}


def test_every_option_is_applied_and_zero_means_off():
    assert _names(build_transforms(ALL_ON, 32, train=True)) == NAMES | {"Resize"}
    assert _names(build_mask_transforms(ALL_ON)) == NAMES
    assert _names(build_transforms(AugmentConfig(hflip=0), 32, train=True)) == {"Resize"}
    assert _names(build_transforms(ALL_ON, 32, train=False)) == {"Resize"}  # validation: resize only


@pytest.mark.parametrize("channels", [1, 3])
def test_images_keep_size_dtype_and_channels_and_change(channels):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 40, channels), dtype=np.uint8)
    out = build_transforms(ALL_ON, 32, train=True)(image=image)["image"]
    assert out.shape == (32, 32, channels) and out.dtype == np.uint8
    plain = build_transforms(ALL_ON, 32, train=False)(image=image)["image"]
    assert not np.array_equal(out, plain)


def test_masks_stay_binary_and_aligned_in_size():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 64, 1), dtype=np.uint8)
    mask = (rng.random((64, 64)) > 0.8).astype(np.uint8)
    out = build_mask_transforms(ALL_ON)(image=image, mask=mask)
    assert out["image"].shape == (64, 64, 1) and out["mask"].shape == (64, 64)
    assert set(np.unique(out["mask"])) <= {0, 1}


def test_the_same_seed_draws_the_same_augmentations():
    image = np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    first, second, other = (build_transforms(ALL_ON, 32, True, seed) for seed in (5, 5, 6))
    a, b, c = ([t(image=image)["image"] for _ in range(3)] for t in (first, second, other))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_uncovered_borders_take_the_fill():
    """Logos on white: a zoomed-out warp must uncover white paper, not black bands the model never sees."""
    image = np.full((32, 32, 3), 255, np.uint8)
    image[12:20, 12:20] = (200, 30, 30)
    zoom_out = AugmentConfig(hflip=0, scale=0.4, coarse_dropout=1, fill=255)
    outs = [build_transforms(zoom_out, 32, True, seed)(image=image)["image"] for seed in range(8)]
    assert all(out[0].min() == 255 and out[-1].min() == 255 for out in outs)
    black = [
        build_transforms(zoom_out.model_copy(update={"fill": 0}), 32, True, s)(image=image)["image"] for s in range(8)
    ]
    assert any(out[0].min() == 0 for out in black)


def test_channel_shuffle_permutes_colours_and_keeps_their_count():
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :8] = (250, 120, 10)
    shuffle = build_transforms(AugmentConfig(hflip=0, channel_shuffle=1), 16, True, seed=3)
    outs = [shuffle(image=image)["image"] for _ in range(6)]
    assert any(not np.array_equal(out, image) for out in outs)
    assert all(sorted(out[0, 0]) == [10, 120, 250] and len(np.unique(out.reshape(-1, 3), axis=0)) == 2 for out in outs)
