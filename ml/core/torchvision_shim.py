"""Make `import torchvision` (and so `import timm`) work on the CPU-only torch wheel.

The only torchvision build for torch 2.13 is a CUDA build whose compiled extension does not load on a
CPU torch; its `_meta_registrations` then fails registering fake kernels for `torchvision::nms`.
Defining the two op schemas lets the pure-Python parts (models, transforms) import; compiled ops still
raise if called. Where the extension loads (a CUDA torch) the first import succeeds and nothing is done.
"""

from __future__ import annotations

import sys

import torch

_LIBRARY: torch.library.Library | None = None  # kept alive: the schemas live as long as this object


def ensure_torchvision() -> bool:
    """Import torchvision, patching the missing op schemas only if needed. Returns True if it patched."""
    global _LIBRARY
    try:
        import torchvision  # noqa: F401

        return False
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401

    return True
