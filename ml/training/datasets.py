"""Torch datasets: whole images decoded once and kept in memory as uint8 (classifiers), and random crops of
images with masks (segmenters, and classifiers with model.head=map)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from ml.config.run import RunConfig
from ml.data.layouts import load_image
from ml.training.augment import build_mask_transforms


def load_resized(frame: pd.DataFrame, channels: int, image_size: int) -> np.ndarray:
    """Decode every image once (threads: PIL releases the GIL) and resize to the training size."""
    resize = A.Resize(image_size, image_size)

    def one(item: tuple[str, int]) -> np.ndarray:
        img = load_image(item[0], item[1], channels)
        return resize(image=img)["image"].reshape(image_size, image_size, channels)

    with ThreadPoolExecutor(max_workers=4) as pool:
        images = list(pool.map(one, zip(frame["path"], frame["row"], strict=True)))
    return np.stack(images) if images else np.zeros((0, image_size, image_size, channels), np.uint8)


class ImageDataset(Dataset):
    """(image float CxHxW in [0,1], class index) pairs; augmentation runs per item on the uint8 array."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, transform: Callable | None = None):
        self.images, self.targets, self.transform = images, targets.astype(np.int64), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
        return x, int(self.targets[i])


def make_loader(
    ds: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    sampler: torch.utils.data.Sampler | None = None,
    train: bool = False,
) -> DataLoader:
    """Batches of ds; a dataset marked `batched` (ml.training.batch_augment) is handed whole lists of indices. A
    training loader (train) drops a last batch of one image, as when 3 imported labels make the train split 16k + 1:
    BatchNorm cannot train on a batch of one (ValueError), and the shuffle leaves out another image each epoch."""
    gen = torch.Generator().manual_seed(seed)
    n = len(sampler) if sampler is not None else len(ds)
    drop_last = train and n > 1 and n % batch_size == 1
    if getattr(ds, "batched", False):
        order = sampler or (RandomSampler(ds, generator=gen) if shuffle else SequentialSampler(ds))
        batches = BatchSampler(order, batch_size, drop_last=drop_last)
        return DataLoader(ds, batch_size=None, sampler=batches, num_workers=num_workers,
                          persistent_workers=num_workers > 0)  # fmt: skip
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        generator=gen,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )


def foreground_crop(
    image: np.ndarray, mask: np.ndarray, size: int, p: float, rng: np.random.Generator, fg: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop (image at least that big): with probability p centred on a random foreground pixel
    (shifted to stay inside), otherwise uniform. `fg` (np.flatnonzero(mask)) spares recomputing it per crop."""
    h, w = mask.shape
    fg = np.flatnonzero(mask) if fg is None else fg
    if len(fg) and rng.random() < p:
        cy, cx = divmod(int(fg[rng.integers(len(fg))]), w)
        top, left = min(max(cy - size // 2, 0), h - size), min(max(cx - size // 2, 0), w - size)
    else:
        top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return image[top : top + size, left : left + size], mask[top : top + size, left : left + size]


def pad_to(a: np.ndarray, size: int) -> np.ndarray:
    """Mirror-pad the first two axes up to `size` (pages smaller than a crop)."""
    pads = [(0, max(0, size - a.shape[0])), (0, max(0, size - a.shape[1]))] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pads, mode="symmetric")


def to_chw(image: np.ndarray) -> np.ndarray:
    """uint8 H x W x C -> float32 C x H x W in [0, 1], the network's input."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0


class CropDataset(Dataset):
    """data.crops_per_image random crops of every (image, mask) per epoch, augmented image and mask together;
    items are (image, mask), or with `labels` (model.head=map) (image, label, mask).

    A crop's label is whether its mask has foreground, for images whose mask has any (a crop beside the defect
    is a clean surface); an image without mask foreground keeps its own label. Randomness comes from torch's
    generator (seeded by ml.training.loop, distinct per DataLoader worker)."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], cfg: RunConfig, labels: np.ndarray | None = None):
        size = cfg.data.crop_size
        self.pages = [(pad_to(image, size), pad_to(mask, size)) for image, mask in pairs]
        self.fg = [np.flatnonzero(m) for _, m in self.pages]
        self.size, self.p, self.repeat = size, cfg.data.foreground_crop, cfg.data.crops_per_image
        self.transform = build_mask_transforms(cfg.train.augment, cfg.train.seed)
        self.labels = labels

    @property
    def targets(self) -> np.ndarray:
        """Each item's image label (what class weights and the weighted sampler count)."""
        return np.tile(self.labels, self.repeat)

    def __len__(self) -> int:
        return len(self.pages) * self.repeat

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        k = i % len(self.pages)
        image, mask = foreground_crop(*self.pages[k], self.size, self.p, rng, self.fg[k])
        out = self.transform(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(mask))
        x, m = torch.from_numpy(to_chw(out["image"])), torch.from_numpy(out["mask"][None].astype(np.float32))
        if self.labels is None:
            return x, m
        label = int(m.any()) if len(self.fg[k]) else int(self.labels[k])
        return x, label, m
