"""Binary masks beside images: where they live and how one decodes.

    <root>/images/<id>.png|jpg  +  <root>/masks/<id>.png      (layout=image_mask; segmentation)
    <root>/<class>/<id>.jpg     +  <root>/masks/<id>.png      (class_folders; a mask where one exists)

ml.data.layouts indexes them (a `mask` column: the mask's path, or "" when the image has none). A mask is
foreground where its value is non-zero, so both 0/255 and 0/1 masks read the same.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ml.data.errors import DatasetError, decode_problem, is_empty_file

MASKS = "masks"
MASK_EXT = ".png"
DEFAULT_LABEL = "foreground"  # the label of every image_mask sample unless data.classes names it


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
        raise DatasetError(f"{path}: {decode_problem(e, is_empty_file(path), ' mask')}") from e
    return (values > 0).astype(np.uint8)
