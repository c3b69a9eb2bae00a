"""Label Studio's import format: one task per image, the model's guess attached as a prediction to correct.

    result = choices_result("circle", from_name="choice", to_name="image")
    result = brush_result(mask, "foreground", from_name="mask", to_name="image", region="3f2a9c01d4")
    task = labelstudio_task(url, [result], model_version="20261123T...", score=0.62, sha256="3f2a...")
    xml = label_config("classify", ["circle", "square"], image="image", control="choice")

The shape, checked against a real Label Studio 1.23.2 server (STACK.md): a JSON list of
`{"data": {"image": URL, ...}, "predictions": [{"model_version", "score", "result": [...]}]}`; `from_name` and
`to_name` must match the project's labeling config (label_config.xml, written beside tasks.json, has the same
names and labels); one model_version per batch, or the queue hides some pre-annotations. The server accepts
invalid predictions silently, so the names, labels and scores must be right here.

Brush masks are `"rle"`: the thi.ng rle-pack bit stream of the RGBA mask (4 bytes per pixel, row-major), as
label-studio-converter's `brush.mask2rle` writes it (word size 8, run-length fields of 3, 4, 8 or 16 bits, runs
longer than 2^16 split, always padded with 1-8 zero bits). `mask_to_rle` reproduces it byte for byte in numpy;
`rle_to_mask` reads it back (e.g. a brush annotation exported from Label Studio).
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

WORD_BITS = 8
RUN_FIELDS = (3, 4, 8, 16)  # bits of the run-length field, by the 2-bit index written before it
MAX_PIECE = 1 << 16  # runs longer than this are written as several pieces


def _bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Each value written MSB-first in its width: one 0/1 array."""
    ends = np.cumsum(widths)
    shift = np.repeat(ends, widths) - 1 - np.arange(int(ends[-1]))
    return ((np.repeat(values, widths) >> shift) & 1).astype(np.uint8)


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """label_studio_converter.brush.mask2rle of an H x W uint8 mask (pass mask * 255: values are not scaled)."""
    flat = np.asarray(mask, dtype=np.uint8).ravel()
    starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1])
    lengths = np.diff(np.append(starts, flat.size)) * 4  # every pixel is 4 equal bytes (RGBA)
    pieces = -(-lengths // MAX_PIECE)
    last = np.cumsum(pieces) - 1
    piece = np.full(int(pieces.sum()), MAX_PIECE, dtype=np.int64)
    piece[last] = lengths - MAX_PIECE * (pieces - 1)
    field = np.repeat(np.searchsorted([8, 16, 256], lengths), pieces)  # chosen by the whole run, as upstream
    fields = np.stack(
        [np.repeat(lengths > 1, pieces), field, piece - 1, np.repeat(flat[starts], pieces)], axis=1
    ).astype(np.int64)
    widths = np.stack(
        [np.ones_like(field), np.full_like(field, 2), np.asarray(RUN_FIELDS)[field], np.full_like(field, WORD_BITS)],
        axis=1,
    )
    header = np.array([flat.size * 4, WORD_BITS - 1, *(w - 1 for w in RUN_FIELDS)], dtype=np.int64)
    bits = _bits(np.concatenate([header, fields.ravel()]), np.concatenate([[32, 5, 4, 4, 4, 4], widths.ravel()]))
    bits = np.concatenate([bits, np.zeros(8 - bits.size % 8, np.uint8)])
    return np.packbits(bits).tolist()


def rle_to_mask(rle: list[int], height: int, width: int) -> np.ndarray:
    """H x W uint8 (the alpha byte) of a brush RLE; the stream must hold exactly H x W x 4 values."""
    stream = "".join(f"{b:08b}" for b in rle)
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        pos += n
        return int(stream[pos - n : pos], 2)

    num, word = read(32), read(5) + 1
    if num != height * width * 4:
        raise ValueError(f"brush RLE holds {num} values, a {width} x {height} RGBA mask has {height * width * 4}")
    sizes = [read(4) + 1 for _ in range(4)]
    out, i = np.zeros(num, dtype=np.uint8), 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeat:
            out[i:j] = read(word)
            i = j
        else:
            for k in range(i, j):
                out[k] = read(word)
            i = j
    return out.reshape(height, width, 4)[:, :, 3]


def choices_result(label: str, from_name: str, to_name: str, region: str = "choice") -> dict[str, Any]:
    """A classifier's guess: one choice."""
    value = {"choices": [label]}
    return {"id": region, "from_name": from_name, "to_name": to_name, "type": "choices", "value": value}


def brush_result(mask: np.ndarray, label: str, from_name: str, to_name: str, region: str) -> dict[str, Any]:
    """A segmenter's guess: the H x W {0, 1} mask as one brush region of `label`."""
    height, width = mask.shape
    return {
        "id": region,
        "from_name": from_name,
        "to_name": to_name,
        "type": "brushlabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_rle((mask > 0).astype(np.uint8) * 255), "brushlabels": [label]},
    }


def labelstudio_task(
    image: str, results: list[dict[str, Any]], model_version: str, score: float, **data: Any
) -> dict[str, Any]:
    """One task: `image` (URL or path) under data.image, extra `data` fields kept (path, sha256, batch...)."""
    prediction = {"model_version": model_version, "score": float(score), "result": results}
    return {"data": {"image": image, **data}, "predictions": [prediction]}


def label_config(task: str, labels: list[str], image: str, control: str) -> str:
    """The labeling config whose names and labels the tasks' predictions use (Choices or BrushLabels)."""
    if task == "segment":
        tags = "".join(f"\n    <Label value={quoteattr(lab)}/>" for lab in labels)
        body = f"<BrushLabels name={quoteattr(control)} toName={quoteattr(image)}>{tags}\n  </BrushLabels>"
    else:
        tags = "".join(f"\n    <Choice value={quoteattr(lab)}/>" for lab in labels)
        body = f'<Choices name={quoteattr(control)} toName={quoteattr(image)} choice="single">{tags}\n  </Choices>'
    return f'<View>\n  <Image name={quoteattr(image)} value="$image"/>\n  {body}\n</View>\n'
