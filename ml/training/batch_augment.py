"""train.augment.batch: small images kept in memory as one uint8 tensor and augmented a whole batch at a time in
torch (flips, shifts), instead of per image through albumentations and the DataLoader's collate. On 28-32 px
images the per-image path costs more than the network's step (doodle-12: ~4x slower than batch-wise).

    ds = BatchImages(images, targets, cfg.train.augment)   # ds[[3, 1, 4]] -> (float N x C x H x W, targets)
    loader = make_loader(ds, 128, True, 0, seed)           # ml.training.datasets: batches of indices
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ml.config.training import AugmentConfig


def flip(x: torch.Tensor, p: float, dim: int) -> torch.Tensor:
    """Each image of the batch mirrored along `dim` with probability p."""
    chosen = torch.rand(len(x)) < p
    return torch.where(chosen[:, None, None, None], x.flip(dim), x)


def shift(x: torch.Tensor, pixels: int, fill: float) -> torch.Tensor:
    """Each image moved by its own random offset of up to +-pixels on both axes, uncovered borders `fill`: a
    crop of the padded batch, gathered in one indexing operation."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, value=fill).permute(0, 2, 3, 1)  # N x H' x W' x C
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n))
    rows, cols = torch.arange(h)[None] + dy[:, None], torch.arange(w)[None] + dx[:, None]
    out = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def augment_batch(x: torch.Tensor, aug: AugmentConfig) -> torch.Tensor:
    """aug.hflip, aug.vflip and aug.shift (fraction of the side) on a float N x C x H x W batch in [0, 1]."""
    if aug.hflip:
        x = flip(x, aug.hflip, 3)
    if aug.vflip:
        x = flip(x, aug.vflip, 2)
    if pixels := round(aug.shift * x.shape[2]):
        x = shift(x, pixels, aug.fill / 255.0)
    return x


class BatchImages(Dataset):
    """Indexed by a list of positions (make_loader hands it whole batches): the images as float N x C x H x W in
    [0, 1] and their class indices, augmented batch-wise when `aug` is given. Randomness: torch's generator."""

    batched = True

    def __init__(self, images: np.ndarray, targets: np.ndarray, aug: AugmentConfig | None = None):
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # uint8, once
        self.targets, self.aug = targets.astype(np.int64), aug
        self._y = torch.from_numpy(self.targets)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        x = self.images[idx].float().div_(255.0)
        return (x if self.aug is None else augment_batch(x, self.aug)), self._y[idx]
