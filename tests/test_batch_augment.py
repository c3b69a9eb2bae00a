"""train.augment.batch: flips and shifts on whole in-memory batches, loaded by lists of indices, trained through
the same loop."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from ml.config.run import load_config
from ml.config.training import AugmentConfig
from ml.data.prepare import prepare_dataset
from ml.training.batch_augment import BatchImages, augment_batch, shift
from ml.training.classifier import datasets
from ml.training.datasets import ImageDataset, make_loader
from ml.training.loop import fit
from tests.conftest import tiny_overrides


def test_a_shift_moves_each_image_by_at_most_its_pixels_and_fills_the_uncovered_border():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the middle
    out = shift(x, 2, fill=0.5)
    where = (out == 1.0).flatten(1).float().argmax(1)
    rows, cols = where // 8, where % 8
    assert ((rows - 4).abs() <= 2).all() and ((cols - 4).abs() <= 2).all() and len(set(where.tolist())) > 1
    assert (out == 0.5).any() and out.shape == x.shape  # moved images uncover fill at the border


def test_flips_mirror_about_half_the_batch_and_zero_means_off():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(200, 1, 1, 1)
    out = augment_batch(x, AugmentConfig(hflip=0.5))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    assert 50 < int(flipped.sum()) < 150 and ((out == x).flatten(1).all(1) | flipped).all()
    assert torch.equal(augment_batch(x, AugmentConfig(hflip=0)), x)


def test_batch_augmentation_rejects_the_per_image_transforms():
    with pytest.raises(ValidationError, match="rotate"):
        AugmentConfig(batch=True, rotate=10)


def test_the_loader_hands_whole_batches_in_a_seeded_order():
    images = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4, 1)
    ds = BatchImages(images, np.arange(10))
    batches = list(make_loader(ds, 4, True, 0, seed=1))
    assert [len(y) for _, y in batches] == [4, 4, 2] and batches[0][0].shape == (4, 1, 4, 4)
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(10))
    assert [y.tolist() for _, y in make_loader(ds, 4, True, 0, seed=1)] == [y.tolist() for _, y in batches]


@pytest.mark.parametrize("batched", [True, False])
def test_a_training_loader_drops_a_last_batch_of_one_and_evaluation_keeps_it(batched):
    images = np.zeros((9, 4, 4, 1), np.uint8)
    ds = BatchImages(images, np.arange(9)) if batched else ImageDataset(images, np.arange(9))
    sizes = lambda **kw: [len(y) for _, y in make_loader(ds, 4, True, 0, seed=1, **kw)]  # noqa: E731
    assert sizes(train=True) == [4, 4]  # BatchNorm cannot train on one image
    assert sizes() == [4, 4, 1]
    assert [len(y) for _, y in make_loader(ds, 3, True, 0, seed=1, train=True)] == [3, 3, 3]


def test_a_classifier_trains_on_batch_augmented_tensors(tmp_path):
    over = {"train.augment.batch": True, "train.augment.shift": 0.1, "train.augment.rotate": 0}
    cfg = load_config("demo", tiny_overrides(tmp_path, **over))
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    train_ds, val_ds = datasets(cfg, prepared)
    assert isinstance(train_ds, BatchImages)
    result = fit(cfg, train_ds, val_ds, prepared.classes, tmp_path / "run")
    assert result.epochs_run == 2 and 0.0 <= result.best_metric <= 1.0
