"""PNG plots published with every model version: confusion matrix, training curves, segmentation overlays."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def confusion_png(confusion: list[list[int]], classes: list[str], path: Path) -> Path:
    cm = np.asarray(confusion)
    size = max(3.5, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xlabel="predicted",
        ylabel="true",
        title="confusion matrix (validation)",
    )
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    return _save(fig, path)


def curves_png(history: list[dict[str, float]], path: Path) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    left.plot(epochs, [h["val_loss"] for h in history], label="val loss")
    for key in [k for k in history[0] if k.startswith("val_") and k != "val_loss"]:
        right.plot(epochs, [h[key] for h in history], label=key.replace("_", " "))
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    return _save(fig, path)


def overlay_png(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, path: Path, max_side: int = 2400) -> Path:
    """Image | prediction | errors (true ink black, false positives red, misses blue), side by side or stacked
    (whichever is squarer), shrunk so that the longer side is at most `max_side` px. Written with PIL: exact pixels."""
    grey = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    page = np.repeat(grey[..., None], 3, axis=2) if grey.ndim == 2 else grey
    t, p = truth.astype(bool), pred.astype(bool)
    errors = (255 - (255 - page) // 3).astype(np.uint8)  # the page, faded
    errors[t & p] = (0, 0, 0)
    errors[p & ~t] = (230, 0, 0)
    errors[t & ~p] = (0, 70, 255)
    predicted = np.repeat(np.where(p, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    h, w = t.shape
    panels = np.concatenate([page, predicted, errors], axis=1 if h >= w else 0)
    img = Image.fromarray(panels.astype(np.uint8))
    if max(img.size) > max_side:
        f = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.Resampling.BOX)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
