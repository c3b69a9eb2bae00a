"""Annotations back from Label Studio into the training data: the loop's last step.

    result = import_annotations(tasks, AnnotationRules("classify", "choice", "mask", "majority"), data_root, read)
    result.added, result.skipped, result.conflicts    # {label: n}, skipped/cancelled, [{sha256, data, new}]

`tasks` are Label Studio tasks with their annotations: a JSON export file, or the API's task list
(ml.labeling.studio_api). A classifier's image goes to <root>/<label>/<sha256[:16]>.<ext>; a segmenter's to
<root>/images/<id>.<ext> with its brush annotation decoded (ml.labeling.labelstudio.rle_to_mask) to
<root>/masks/<id>.png (0/255). Tasks without annotations, or whose annotations were all cancelled (skipped), are
left out and counted; several annotations of one task are resolved by `resolve` (majority, or refuse) and the
unresolved listed. Images are matched by sha256: one already in the data with the same label (mask) adds nothing,
so importing twice is a no-op; one there under another label (another mask) is a conflict, reported, never written.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ml.core.files import sha256_bytes, sha256_file
from ml.data.masks import MASK_EXT, MASKS, load_mask
from ml.labeling.labelstudio import rle_to_mask
from ml.monitoring.scoring import local_images

IMAGES = "images"
ID_CHARS = 16  # file names: the first hex digits of the image's sha256


@dataclass(frozen=True)
class AnnotationRules:
    kind: str  # classify | segment
    choices_name: str  # the labeling config's control names
    brush_name: str
    resolve: str  # majority | refuse


@dataclass
class ImportedLabels:
    tasks: int = 0
    added: dict[str, int] = field(default_factory=dict)  # label -> images written
    already: int = 0  # in the data with the same label: nothing to add
    skipped: int = 0  # every annotation cancelled
    unannotated: int = 0
    disagreements: list[dict[str, Any]] = field(default_factory=list)  # task, annotations' labels
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # sha256, data's label, annotated label

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self, title: str) -> str:
        """What came in, for the Prefect artifact."""
        rows = "".join(f"| {label} | {n} |\n" for label, n in sorted(self.added.items())) or "| (none) | 0 |\n"
        out = (
            f"**{title}**: {self.tasks} tasks; {sum(self.added.values())} images added, {self.already} already in "
            f"the data, {self.skipped} skipped, {self.unannotated} unannotated, {len(self.disagreements)} "
            f"unresolved, {len(self.conflicts)} label conflicts.\n\n| label | added |\n|---|---:|\n{rows}"
        )
        for name, items in (("Unresolved annotations", self.disagreements), ("Label conflicts", self.conflicts)):
            if items:
                out += f"\n{name}:\n\n" + "".join(f"- {item}\n" for item in items)
        return out


def _choices(annotation: dict[str, Any], rules: AnnotationRules) -> str | None:
    picked = [
        c
        for r in annotation.get("result", [])
        if r.get("from_name") == rules.choices_name and r.get("type") == "choices"
        for c in r["value"]["choices"]
    ]
    return picked[0] if len(picked) == 1 else None


def _mask(annotation: dict[str, Any], rules: AnnotationRules, shape: tuple[int, int] | None) -> np.ndarray | None:
    """The union of the annotation's brush regions (H x W {0, 1}); None when it has none and no size is known."""
    mask = None if shape is None else np.zeros(shape, np.uint8)
    for r in annotation.get("result", []):
        if r.get("from_name") == rules.brush_name and r.get("type") == "brushlabels":
            region = rle_to_mask(r["value"]["rle"], r["original_height"], r["original_width"]) > 0
            mask = region.astype(np.uint8) if mask is None else mask | region
    return mask


def _resolve_labels(labels: list[str], rule: str) -> str | None:
    counts = Counter(labels).most_common()
    if len(counts) == 1:
        return counts[0][0]
    if rule == "majority" and counts[0][1] > counts[1][1]:
        return counts[0][0]
    return None


def _resolve_masks(masks: list[np.ndarray], rule: str) -> np.ndarray | None:
    if all(np.array_equal(masks[0], m) for m in masks[1:]):
        return masks[0]
    votes = np.sum(masks, axis=0) * 2
    if rule == "majority" and not (votes == len(masks)).any():  # a tied pixel has no majority
        return (votes > len(masks)).astype(np.uint8)
    return None


def _existing(root: Path, kind: str) -> dict[str, Path]:
    """sha256 -> file of every image already in the training data (a segmenter's: under images/)."""
    if not root.is_dir():
        return {}
    images = root / IMAGES if kind == "segment" else root
    if not images.is_dir():
        return {}
    items = (i for i in local_images(images) if Path(i.file).relative_to(images).parts[0] != MASKS)
    return {sha256_file(i.file): Path(i.file) for i in items}


def import_annotations(
    tasks: list[dict[str, Any]], rules: AnnotationRules, root: Path, read: Callable[[str], bytes]
) -> ImportedLabels:
    """Write the annotated images of `tasks` into the training data under `root`; what came in and what did not.
    `read` reads a task's data.path (the pool file) as bytes."""
    out, existing = ImportedLabels(tasks=len(tasks)), _existing(root, rules.kind)
    for task in tasks:
        annotations = task.get("annotations") or []
        live = [a for a in annotations if not a.get("was_cancelled")]
        if not annotations:
            out.unannotated += 1
            continue
        if not live:
            out.skipped += 1
            continue
        data = task["data"]
        if rules.kind == "segment":
            _add_mask(out, task, live, rules, root, existing, read)
        else:
            labels = [label for a in live if (label := _choices(a, rules)) is not None]
            label = _resolve_labels(labels, rules.resolve) if labels else None
            if label is None:
                out.disagreements.append({"task": task.get("id"), "path": data.get("path"), "labels": labels})
                continue
            _add_image(
                out, data, label, root / label, existing, read, same=lambda f, label=label: f.parent.name == label
            )
    return out


def _add_mask(
    out: ImportedLabels,
    task: dict[str, Any],
    live: list[dict[str, Any]],
    rules: AnnotationRules,
    root: Path,
    existing: dict[str, Path],
    read: Callable[[str], bytes],
) -> None:
    data = task["data"]
    image = read(data["path"])
    with Image.open(io.BytesIO(image)) as img:
        shape = (img.height, img.width)
    masks = [_mask(a, rules, shape) for a in live]
    mask = _resolve_masks(masks, rules.resolve)
    if mask is None:
        pixels = [int(m.sum()) for m in masks]
        out.disagreements.append({"task": task.get("id"), "path": data.get("path"), "mask_pixels": pixels})
        return

    def same(file: Path) -> bool:
        stored = root / MASKS / (file.stem + MASK_EXT)
        return stored.is_file() and np.array_equal(load_mask(str(stored)), mask)

    if _add_image(out, data, "foreground", root / IMAGES, existing, lambda _: image, same):
        name = data["sha256"][:ID_CHARS] + MASK_EXT
        (root / MASKS).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask * 255).save(root / MASKS / name)


def _add_image(
    out: ImportedLabels,
    data: dict[str, Any],
    label: str,
    folder: Path,
    existing: dict[str, Path],
    read: Callable[[str], bytes],
    same: Callable[[Path], bool],
) -> bool:
    """Copy the task's image into `folder` unless it is already in the data (counted, or a conflict); True when
    written."""
    sha = data["sha256"]
    if sha in existing:
        if same(existing[sha]):
            out.already += 1
        else:
            out.conflicts.append({"sha256": sha, "path": data.get("path"), "in_data": str(existing[sha]), "new": label})
        return False
    image = read(data["path"])
    if sha256_bytes(image) != sha:
        raise ValueError(f"{data['path']} changed since it was selected (sha256 differs): its label may not fit it")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (sha[:ID_CHARS] + Path(data["path"]).suffix.lower())
    target.write_bytes(image)
    existing[sha] = target
    out.added[label] = out.added.get(label, 0) + 1
    return True
