"""Whole images of any size through a fixed-size network: overlapping tiles blended with a Hann window.

    logits = predict_tiled(image, torch_predictor(model, device), tile=512, overlap=0.25)   # evaluation
    logits = predict_tiled(image, onnx_predictor(session), tile=512, overlap=0.25)         # serving

`image` is C x H x W float32 in [0, 1]; the result is K x H x W logits of the same H x W (a 4161 x 1613 page
is never resized). The borders are mirror-padded by half the overlap (and up to one tile), so every pixel
is seen away from a tile edge, where a padded convolution sees context that is not there; each output
pixel is the window-weighted mean of the tiles covering it, so seams do not show. Memory is a few H x W
float arrays plus one batch of tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

Predict = Callable[[np.ndarray], np.ndarray]  # float32 N x C x T x T -> logits N x K x T x T


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering [0, length) (length >= tile); the last tile ends exactly at `length`."""
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def hann_window(tile: int) -> np.ndarray:
    """T x T weights, highest in the centre and positive at the edges (a Hann window of T + 2 points, trimmed)."""
    w = np.hanning(tile + 2)[1:-1].astype(np.float32)
    return np.outer(w, w)


def predict_tiled(image: np.ndarray, predict: Predict, tile: int, overlap: float = 0.25, batch: int = 4) -> np.ndarray:
    """Blended K x H x W logits of a C x H x W image, predicted `batch` tiles at a time."""
    _, h, w = image.shape
    stride = max(1, int(round(tile * (1 - overlap))))
    margin = (tile - stride) // 2
    pad_h, pad_w = max(margin, tile - h - margin), max(margin, tile - w - margin)
    padded = _mirror(image, margin, pad_h, margin, pad_w)
    ph, pw = padded.shape[1:]
    window = hann_window(tile)
    boxes = [(y, x) for y in tile_starts(ph, tile, stride) for x in tile_starts(pw, tile, stride)]
    total, weight = None, np.zeros((ph, pw), np.float32)
    for i in range(0, len(boxes), batch):
        part = boxes[i : i + batch]
        tiles = np.stack([padded[:, y : y + tile, x : x + tile] for y, x in part])
        logits = np.asarray(predict(np.ascontiguousarray(tiles, dtype=np.float32)), dtype=np.float32)
        if total is None:
            total = np.zeros((logits.shape[1], ph, pw), np.float32)
        for (y, x), out in zip(part, logits, strict=True):
            total[:, y : y + tile, x : x + tile] += out * window
            weight[y : y + tile, x : x + tile] += window
    return (total / weight)[:, margin : margin + h, margin : margin + w]


def _mirror(image: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Mirror padding that works for pads larger than the image (np.pad 'symmetric' repeats as needed)."""
    return np.pad(image, ((0, 0), (top, bottom), (left, right)), mode="symmetric")


def torch_predictor(model: nn.Module, device: torch.device, amp: bool = False) -> Predict:
    """`predict` for predict_tiled from a torch model (eval mode, no grad, AMP only on CUDA)."""
    model.eval()

    @torch.no_grad()
    def predict(tiles: np.ndarray) -> np.ndarray:
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            out = model(torch.from_numpy(tiles).to(device))
        return out.float().cpu().numpy()

    return predict


def onnx_predictor(session: ort.InferenceSession, output: str = "logits") -> Predict:
    """`predict` for predict_tiled from an onnxruntime session of an exported segmenter (ml.export.onnx)."""
    name = session.get_inputs()[0].name
    return lambda tiles: session.run([output], {name: tiles})[0]
