"""Torch datasets over an indexed frame (path, row, label): decoded once, kept in memory as uint8."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from ml.data.layouts import load_image


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
) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        generator=gen,
        drop_last=False,
        persistent_workers=num_workers > 0,
    )
