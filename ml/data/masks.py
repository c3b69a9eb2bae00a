"""Binary masks beside images: the image_mask layout, masks next to class folders, and decoding a mask.

    <root>/images/<id>.png|jpg  +  <root>/masks/<id>.png      (layout=image_mask; segmentation)
    <root>/<class>/<id>.jpg     +  <root>/masks/<id>.png      (class_folders; a mask where one exists)

The index gets a `mask` column: the mask's path, or "" when the image has none. A mask is foreground
where its value is non-zero, so both 0/255 and 0/1 masks read the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ml.config.data import DataConfig
from ml.data.layouts import DatasetError, _images, _rows

MASKS = "masks"
MASK_EXT = ".png"
DEFAULT_LABEL = "foreground"  # the label of every image_mask sample unless data.classes names it


def _mask_for(paths: pd.Series, root: Path) -> list[str]:
    folder = root / MASKS
    found = {f.stem: str(f) for f in folder.iterdir() if f.suffix.lower() == MASK_EXT} if folder.is_dir() else {}
    return [found.get(Path(p).stem, "") for p in paths]


def attach_masks(frame: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Class folders with a <root>/masks/ folder get a `mask` column; without one the frame is unchanged."""
    if not (root / MASKS).is_dir():
        return frame
    return frame.assign(mask=_mask_for(frame["path"], root))


def index_image_mask(root: Path, cfg: DataConfig) -> pd.DataFrame:
    """One row per <root>/images/ file, `mask` = <root>/masks/<stem>.png or "" (validation reports it missing)."""
    rule = "image_mask expects <root>/images/<id>.png|jpg|jpeg and <root>/masks/<id>.png"
    if cfg.classes is not None and len(cfg.classes) != 1:
        raise DatasetError(f"{root}: image_mask has one foreground class, data.classes={cfg.classes} ({rule})")
    folder = root / "images"
    files = [str(f) for f in _images(folder)] if folder.is_dir() else []
    if not files:
        raise DatasetError(f"{folder}: no .png/.jpg/.jpeg images ({rule})")
    label = cfg.classes[0] if cfg.classes else DEFAULT_LABEL
    frame = _rows(files, [label] * len(files), root)
    return frame.assign(mask=_mask_for(frame["path"], root))


def mask_values(img: Image.Image) -> np.ndarray:
    """The stored values of a decoded mask as HxW (palette indices, not colours; colour masks as grey)."""
    if img.mode in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(img)
    if img.mode in ("LA", "PA"):
        return np.asarray(img)[..., 0]
    return np.asarray(img.convert("L"))


def load_mask(path: str) -> np.ndarray:
    """HxW uint8 in {0, 1}: 1 where the mask file is non-zero."""
    try:
        with Image.open(path) as img:
            img.load()
            values = mask_values(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: cannot decode mask ({e})") from e
    return (values > 0).astype(np.uint8)
