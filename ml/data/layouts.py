"""Index a dataset on disk into one frame (path, row, label, group, split), whatever its layout.

Every later step (profiling, splitting, training, the fingerprint that names a data version) reads this
frame, so layout rules live here only. Errors name the file or folder and the rule it breaks, because
the person reading them is fixing their data folder, not this code.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ml.config.data import DataConfig
from ml.core.files import sha256_file
from ml.data.errors import DatasetError, decode_problem, is_empty_file
from ml.data.masks import DEFAULT_LABEL, MASK_EXT, MASKS

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
NOT_CLASSES = {"masks"}  # masks live beside classification images, they are never a class
SPLITS = ("train", "val", "test")  # a pre-split tree needs train/ and val/; test/ is optional
COLUMNS = ["path", "row", "label", "group", "split"]


def index_dataset(cfg: DataConfig) -> pd.DataFrame:
    """One row per sample, sorted by (class order, path, row); `group` defaults to a unique id per sample."""
    root = Path(cfg.root).absolute()
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist or is not a folder")
    if cfg.layout == "class_folders":
        frame = _attach_masks(_class_folders(root, cfg), root)
    elif cfg.layout == "npy_per_class":
        frame = _npy_per_class(root, cfg)
    elif cfg.layout == "image_mask":
        frame = _index_image_mask(root, cfg)
    else:
        frame = _manifest(root, cfg)
    order = {c: i for i, c in enumerate(class_names(frame, cfg))}
    frame = frame.assign(_k=frame["label"].map(order)).sort_values(["_k", "path", "row"], kind="stable")
    frame = frame.drop(columns="_k").reset_index(drop=True)
    frame["row"] = frame["row"].astype(int)
    return frame


def class_names(frame: pd.DataFrame, cfg: DataConfig) -> list[str]:
    """Class index order used by training and export: cfg.classes as given, else sorted labels.

    Target-vs-rest puts the target last, so index 1 is the positive class (AUROC, thresholds).
    """
    if cfg.binary_target:
        return [f"not_{cfg.binary_target}", cfg.binary_target]
    return list(cfg.classes) if cfg.classes else sorted(frame["label"].unique())


def _visible(entries: list[Path]) -> list[Path]:
    return sorted(e for e in entries if not e.name.startswith("."))


def _subdirs(folder: Path) -> dict[str, Path]:
    return {d.name: d for d in _visible(list(folder.iterdir())) if d.is_dir() and d.name not in NOT_CLASSES}


def _images(folder: Path) -> list[Path]:
    return [f for f in _visible(list(folder.iterdir())) if f.suffix.lower() in IMAGE_EXTS and f.is_file()]


def _select(found: list[str], cfg: DataConfig, where: Path, rule: str) -> list[str]:
    if not cfg.classes:
        if not found:
            raise DatasetError(f"{where}: no classes found ({rule})")
        return sorted(found)
    unknown = [c for c in cfg.classes if c not in found]
    if unknown:
        raise DatasetError(f"{where}: class(es) {unknown} not found ({rule}); found {sorted(found)}")
    return list(cfg.classes)


def _rows(paths: list[str], labels: list[str], root: Path, splits: list[str] | None = None) -> pd.DataFrame:
    rel = [os.path.relpath(p, root) for p in paths]
    return pd.DataFrame(
        {"path": paths, "row": -1, "label": labels, "group": rel, "split": splits if splits is not None else ""},
        columns=COLUMNS,
    )


def _class_folders(root: Path, cfg: DataConfig) -> pd.DataFrame:
    rule = "class_folders expects <root>/<class>/*.png|jpg|jpeg or <root>/train|val[|test]/<class>/..."
    top = _subdirs(root)
    presplit = all(s in top and _subdirs(top[s]) for s in ("train", "val"))
    parts = {s: _subdirs(top[s]) for s in SPLITS if s in top} if presplit else {"": top}
    classes = _select(sorted({c for p in parts.values() for c in p}), cfg, root, rule)
    paths, labels, splits = [], [], []
    for cls in classes:
        n = len(paths)
        for split, dirs in parts.items():
            files = _images(dirs[cls]) if cls in dirs else []
            paths += [str(f) for f in files]
            labels += [cls] * len(files)
            splits += [split] * len(files)
        if len(paths) == n:
            where = " and ".join(str(root / s / cls) for s in parts) if presplit else str(root / cls)
            raise DatasetError(f"class {cls!r} is empty: no .png/.jpg/.jpeg images in {where} ({rule})")
    frame = _rows(paths, labels, root, splits)
    if cfg.group.by == "column" and cfg.group.column not in frame.columns:
        frame[cfg.group.column] = _manifest_column(frame, root / cfg.manifest, cfg.group.column)
    return frame


def _manifest_column(frame: pd.DataFrame, csv: Path, column: str) -> pd.Series:
    """For class folders, group.by=column reads the column from a side manifest joined on id == file stem."""
    if not csv.is_file():
        raise DatasetError(f"group.by=column needs {csv}: a CSV with an `id` (file stem) column and {column!r}")
    side = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if "id" not in side.columns or column not in side.columns:
        raise DatasetError(f"{csv}: group.by=column needs columns 'id' and {column!r}; has {list(side.columns)}")
    if side["id"].duplicated().any():
        raise DatasetError(f"{csv}: ids are not unique, e.g. {side['id'][side['id'].duplicated()].head(3).tolist()}")
    stems = frame["path"].map(lambda p: Path(p).stem)
    return stems.map(dict(zip(side["id"], side[column], strict=True))).fillna("")


def _npy_per_class(root: Path, cfg: DataConfig) -> pd.DataFrame:
    rule = "npy_per_class expects <root>/<class>.npy of shape (N, H*W) uint8, H*W a perfect square"
    files = {f.stem: f for f in _visible(list(root.glob("*.npy"))) if f.is_file()}
    parts = []
    for cls in _select(list(files), cfg, root, rule):
        path = files[cls]
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path}: cannot read as .npy ({e})") from e
        side = math.isqrt(arr.shape[1]) if arr.ndim == 2 else 0
        if arr.ndim != 2 or arr.dtype != np.uint8 or side * side != arr.shape[1] or side == 0:
            raise DatasetError(f"{path}: shape {arr.shape} dtype {arr.dtype} breaks the rule ({rule})")
        if arr.shape[0] == 0:
            raise DatasetError(f"class {cls!r} is empty: {path} has 0 rows ({rule})")
        n = arr.shape[0]
        parts.append(
            pd.DataFrame(
                {
                    "path": str(path),
                    "row": np.arange(n),
                    "label": cls,
                    "group": [f"{path.name}#{i}" for i in range(n)],
                    "split": "",
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _manifest(root: Path, cfg: DataConfig) -> pd.DataFrame:
    csv = root / cfg.manifest
    rule = "manifest expects a CSV with columns path,label[,group][,split], paths relative to the root"
    if not csv.is_file():
        raise DatasetError(f"manifest {csv} does not exist ({rule})")
    m = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if not {"path", "label"} <= set(m.columns):
        raise DatasetError(f"{csv}: columns {list(m.columns)} lack path and/or label ({rule})")
    if m.empty:
        raise DatasetError(f"{csv}: no rows ({rule})")
    classes = _select(sorted(set(m["label"])), cfg, csv, rule)
    m = m[m["label"].isin(classes)].copy()
    m["path"] = [os.path.normpath(os.path.join(root, p)) for p in m["path"]]
    missing = [p for p in m["path"] if not os.path.isfile(p)]
    if missing:
        raise DatasetError(f"{csv}: {len(missing)} listed file(s) missing, e.g. {missing[:3]}")
    rel = [os.path.relpath(p, root) for p in m["path"]]
    m["group"] = [g or r for g, r in zip(m.get("group", [""] * len(m)), rel, strict=True)]
    m["split"] = m["split"] if "split" in m.columns else ""
    bad = sorted(set(m["split"]) - {"", *SPLITS})
    if bad:
        raise DatasetError(f"{csv}: split values {bad} not in {list(SPLITS)} or empty")
    m["row"] = -1
    return m[COLUMNS + [c for c in m.columns if c not in COLUMNS]]


def dataset_fingerprint(frame: pd.DataFrame, known: dict[str, str] | None = None) -> str:
    """Content hash of the indexed data: same files, rows and labels -> same id, wherever the root lies.

    `known` (path -> sha256 of the file, e.g. from the profile) spares reading those files again.
    """
    files = sorted(set(frame["path"]))
    if not files:
        return hashlib.sha256(b"").hexdigest()
    common = os.path.commonpath([os.path.dirname(p) for p in files])
    digests = {p: known[p] for p in files if known and p in known}
    todo = [p for p in files if p not in digests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        digests.update(zip(todo, pool.map(sha256_file, todo), strict=True))
    lines = sorted(
        f"{os.path.relpath(p, common)}\t{r}\t{lab}\t{digests[p]}\n"
        for p, r, lab in zip(frame["path"], frame["row"], frame["label"], strict=True)
    )
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
    return h.hexdigest()


@lru_cache(maxsize=64)
def _npy(path: str, mtime_ns: int, size: int) -> np.ndarray:
    return np.load(path, mmap_mode="r")  # cached per file version: opening per row is slow


def load_image(path: str, row: int, channels: int) -> np.ndarray:
    """Decode one sample to HxWxC uint8 (C = channels); transparency is flattened onto white."""
    try:
        if row >= 0:
            st = os.stat(path)
            flat = np.asarray(_npy(path, st.st_mtime_ns, st.st_size)[row])
            side = math.isqrt(flat.size)
            img = Image.fromarray(flat.reshape(side, side))
        else:
            with Image.open(path) as im:
                im.load()
                img = im
    except (OSError, ValueError, IndexError, SyntaxError, Image.DecompressionBombError) as e:
        why = decode_problem(e, row < 0 and is_empty_file(path), f" row {row}" if row >= 0 else "")
        raise DatasetError(f"{path}: {why}") from e
    return to_array(img, channels)


def to_array(img: Image.Image, channels: int) -> np.ndarray:
    """A decoded image as HxWxC uint8: 16-bit grey scaled to 8 bits, transparency flattened onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: scale to 8 bits, do not clip
        arr = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(arr.clip(0, 255).round().astype(np.uint8))
    if (img.mode == "P" and "transparency" in img.info) or img.mode in ("LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img)
    out = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return np.ascontiguousarray(out[..., None] if channels == 1 else out)


def _mask_for(paths: pd.Series, root: Path) -> list[str]:
    folder = root / MASKS
    found = {f.stem: str(f) for f in folder.iterdir() if f.suffix.lower() == MASK_EXT} if folder.is_dir() else {}
    return [found.get(Path(p).stem, "") for p in paths]


def _attach_masks(frame: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Class folders with a <root>/masks/ folder get a `mask` column; without one the frame is unchanged."""
    if not (root / MASKS).is_dir():
        return frame
    return frame.assign(mask=_mask_for(frame["path"], root))


def _index_image_mask(root: Path, cfg: DataConfig) -> pd.DataFrame:
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
