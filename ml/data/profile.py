"""Profile a dataset: one metadata row per sample, each file read once, in parallel, cached by content.

    prof = profile_dataset(index_dataset(cfg.data), cfg.data.root, cache=Path(".visionflow/cache/profile-demo.parquet"))
    prof.frame    # index columns + file, readable, error, format, width, height, channels, bytes, sha256,
                  # brightness, contrast, blur (grey 0-255: mean, std, variance of the Laplacian)
                  # + mask_present, mask_readable, mask_error, mask_width, mask_height, mask_same_size,
                  #   mask_binary, mask_levels, mask_foreground, mask_components (when the index has `mask`)
    prof.hits, prof.hashed, prof.decoded

The cache holds one row per sample, keyed by (path, row, mask). A sample whose files still have the cached
(mtime_ns, size) is served without opening them; otherwise its files are read and hashed, and only content
never seen before is decoded. npy rows are hashed row by row. Files that resolve outside the data root (a
manifest's ../../etc/passwd, a symlink leading out) are refused unread. Decoding uses PIL, as training does,
so "readable" means "trainable".
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from ml.data.errors import decode_problem
from ml.data.layouts import to_array
from ml.data.masks import mask_values

VERSION = 2  # bump when a metric's definition changes: older cache files are then ignored (2: decode messages)
KEY = ["path", "row", "mask"]
STAT = ["file_mtime_ns", "file_size", "mask_mtime_ns", "mask_size"]
IMAGE = ["readable", "error", "format", "width", "height", "channels", "bytes", "sha256"]
IMAGE += ["brightness", "contrast", "blur"]
MASK = ["mask_readable", "mask_error", "mask_width", "mask_height", "mask_same_size", "mask_binary", "mask_levels"]
MASK += ["mask_foreground", "mask_components", "mask_sha256"]
NUMERIC = ["width", "height", "channels", "bytes", "brightness", "contrast", "blur"]
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass
class Profile:
    frame: pd.DataFrame  # one row per row of the index, same order
    hits: int  # samples served from the cache by (mtime_ns, size), no file opened
    hashed: int  # samples whose files were read and hashed
    decoded: int  # of those, samples decoded (content not in the cache)
    refused: int  # samples not read: outside the data root, or gone
    seconds: float


def default_workers() -> int:
    return min(8, os.cpu_count() or 2)


class _Resolver:
    """Stat and containment of files, one lstat each: folders are resolved once (a dataset has few)."""

    def __init__(self, root: Path):
        self.root = os.path.realpath(root)
        self.dirs: dict[str, str] = {}

    def __call__(self, path: str) -> tuple[int, int, str]:
        """(mtime_ns, size, problem); problem is "" for a regular file inside the root."""
        folder, name = os.path.split(path)
        if folder not in self.dirs:
            self.dirs[folder] = os.path.realpath(folder)
        real = os.path.join(self.dirs[folder], name)
        try:
            st = os.lstat(real)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(real)
                st = os.stat(real)
        except OSError as e:
            return -1, -1, f"cannot read ({e.strerror})"
        if not real.startswith(self.root + os.sep):
            return -1, -1, f"refused: resolves to {real}, outside the data root {self.root}"
        return st.st_mtime_ns, st.st_size, ""


def _stat(samples: pd.DataFrame, root: Path) -> pd.DataFrame:
    resolve = _Resolver(root)
    seen = {p: resolve(p) for p in samples["path"].unique()}  # npy rows share their file
    files = [seen[p] for p in samples["path"]]
    masks = [resolve(m) if m else (-1, -1, "") for m in samples["mask"]]
    out = samples.copy()
    out["file_mtime_ns"], out["file_size"], out["problem"] = zip(*files, strict=True) if files else ([], [], [])
    out["mask_mtime_ns"], out["mask_size"], out["mask_problem"] = zip(*masks, strict=True) if masks else ([], [], [])
    return out


def _image_stats(data: bytes) -> dict:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            fmt, (w, h), bands = img.format, img.size, len(img.getbands())
            if img.mode == "P":
                bands = 4 if "transparency" in img.info else 3
            grey = to_array(img, 1)[..., 0]
    except DECODE_ERRORS as e:
        return {"readable": False, "error": decode_problem(e, not data)}
    base = {"readable": True, "error": "", "format": fmt, "width": w, "height": h, "channels": bands}
    return {**base, **_grey_stats(grey)}


def _grey_stats(grey: np.ndarray) -> dict:
    mean, std = cv2.meanStdDev(grey)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_64F))
    return {"brightness": float(mean[0, 0]), "contrast": float(std[0, 0]), "blur": float(lap_std[0, 0]) ** 2}


def _mask_stats(data: bytes, size: tuple[int, int] | None) -> dict:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            values = mask_values(img)
    except DECODE_ERRORS as e:
        return {"mask_readable": False, "mask_error": decode_problem(e, not data, " mask")}
    values = values.astype(np.uint8) if values.dtype == bool else values
    levels = np.flatnonzero(np.bincount(values.ravel())) if values.dtype == np.uint8 else np.unique(values)
    fg = (values > 0).astype(np.uint8)
    n_fg = cv2.countNonZero(fg)
    return {
        "mask_readable": True,
        "mask_error": "",
        "mask_width": values.shape[1],
        "mask_height": values.shape[0],
        "mask_same_size": None if size is None else (values.shape[1], values.shape[0]) == size,
        "mask_binary": len(levels[levels > 0]) <= 1,
        "mask_levels": ",".join(map(str, levels[:6])) + (",..." if len(levels) > 6 else ""),
        "mask_foreground": n_fg / max(fg.size, 1),
        "mask_components": cv2.connectedComponents(fg, connectivity=8)[0] - 1 if n_fg else 0,
    }


def _read(path: str) -> tuple[bytes | None, str]:
    try:
        with open(path, "rb") as f:
            return f.read(), ""
    except OSError as e:
        return None, f"cannot read ({e.strerror})"


def _profile_file(item: dict, known: dict[tuple[str, str], dict]) -> tuple[dict, bool]:
    """(record, decoded?) of one image file and its mask; content seen before is not decoded again."""
    data, err = _read(item["path"])
    if data is None:
        return {"readable": False, "error": err}, False
    rec: dict = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "mask_sha256": ""}
    mdata, merr = _read(item["mask"]) if item["mask"] and not item["mask_problem"] else (None, item["mask_problem"])
    if mdata is not None:
        rec["mask_sha256"] = hashlib.sha256(mdata).hexdigest()
    elif merr:
        rec.update(mask_readable=False, mask_error=merr)
    cached = known.get((rec["sha256"], rec["mask_sha256"]))
    if cached is not None:
        return {**cached, **rec}, False
    rec.update(_image_stats(data))
    if mdata is not None:
        rec.update(_mask_stats(mdata, (rec["width"], rec["height"]) if rec["readable"] else None))
    return rec, True


def _profile_npy(path: str, rows: list[int], known: dict[tuple[str, str], dict]) -> list[tuple[dict, bool]]:
    """Per row of an (N, H*W) uint8 array: the row's bytes are its content."""
    arr = np.load(path, mmap_mode="r")
    side = math.isqrt(arr.shape[1])
    out = []
    for r in rows:
        flat = np.ascontiguousarray(arr[r])
        sha = hashlib.sha256(flat.tobytes()).hexdigest()
        rec = {"sha256": sha, "bytes": flat.nbytes, "mask_sha256": ""}
        cached = known.get((sha, ""))
        if cached is not None:
            out.append(({**cached, **rec}, False))
            continue
        base = {"readable": True, "error": "", "format": "NPY", "width": side, "height": side, "channels": 1}
        out.append(({**rec, **base, **_grey_stats(flat.reshape(side, side))}, True))
    return out


def _read_cache(cache: Path | None) -> pd.DataFrame:
    typed = {"path": str, "row": "int64", "mask": str, **dict.fromkeys(STAT, "int64")}
    empty = pd.DataFrame(columns=KEY + STAT + IMAGE + MASK + ["version"]).astype(typed)
    if cache is None or not cache.is_file():
        return empty
    try:
        old = pd.read_parquet(cache)
    except (OSError, ValueError):
        return empty  # a damaged cache is only a slower run
    if set(empty.columns) - set(old.columns) or not (old["version"] == VERSION).all():
        return empty
    return old


def _write_cache(cache: Path, records: pd.DataFrame) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    records.assign(version=VERSION).to_parquet(tmp, index=False)
    os.replace(tmp, cache)


def _compute(todo: pd.DataFrame, old: pd.DataFrame, workers: int) -> tuple[list[dict], int]:
    """Records for the samples not served by stat, in todo's order, and how many were decoded."""
    if todo.empty:
        return [], 0
    content = old.drop_duplicates(["sha256", "mask_sha256"])
    known = dict(zip(zip(content["sha256"], content["mask_sha256"], strict=True),
                     content[IMAGE + MASK].to_dict("records"), strict=True))  # fmt: skip
    items = todo.to_dict("records")
    npy = {}
    for i, it in enumerate(items):
        if it["row"] >= 0:
            npy.setdefault(it["path"], []).append(i)
    files = [i for i, it in enumerate(items) if it["row"] < 0]
    results: list[tuple[dict, bool]] = [({}, False)] * len(items)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = pool.map(lambda i: _profile_file(items[i], known), files)
        by_npy = {p: pool.submit(_profile_npy, p, [items[i]["row"] for i in idx], known) for p, idx in npy.items()}
        for i, res in zip(files, done, strict=True):
            results[i] = res
        for p, fut in by_npy.items():
            for i, res in zip(npy[p], fut.result(), strict=True):
                results[i] = res
    return [r for r, _ in results], sum(d for _, d in results)


def profile_dataset(frame: pd.DataFrame, root: Path, cache: Path | None = None, workers: int | None = None) -> Profile:
    """Profile every sample of an index frame (path, row, label, ...[, mask]); cache read and rewritten if given."""
    start = time.perf_counter()
    has_masks = "mask" in frame.columns
    index = frame if has_masks else frame.assign(mask="")
    samples = _stat(index[KEY].drop_duplicates(KEY).reset_index(drop=True), root)
    old = _read_cache(cache)
    merged = samples.merge(old, on=KEY + STAT, how="left", indicator=True)
    hit = (merged.pop("_merge") == "both") & (merged["problem"] == "")
    todo = merged[~hit & (merged["problem"] == "")]
    records, decoded = _compute(todo[KEY + ["mask_problem"]], old, workers or default_workers())
    fresh = pd.DataFrame(records, index=todo.index, columns=IMAGE + MASK)
    refused = merged["problem"] != ""
    merged.loc[refused, "readable"] = False
    merged.loc[refused, "error"] = merged.loc[refused, "problem"]
    merged = merged.astype({c: object for c in IMAGE + MASK})
    merged.loc[todo.index, IMAGE + MASK] = fresh
    if cache is not None and (len(todo) or len(old) != int(hit.sum())):
        _write_cache(cache, merged.loc[~refused, KEY + STAT + IMAGE + MASK])
    out = index.merge(merged[KEY + IMAGE + MASK], on=KEY, how="left")
    out.index = frame.index
    out.insert(0, "file", [p if r < 0 else f"{p}#{r}" for p, r in zip(out["path"], out["row"], strict=True)])
    out["readable"] = out["readable"].astype(bool)
    out[NUMERIC] = out[NUMERIC].astype("float64")
    if has_masks:
        numeric = ["mask_width", "mask_height", "mask_foreground", "mask_components"]
        out[numeric] = out[numeric].astype("float64")
        out.insert(out.columns.get_loc("mask_readable"), "mask_present", out["mask"] != "")
    else:
        out = out.drop(columns=["mask", *MASK])
    hashed = len(todo)
    return Profile(out, int(hit.sum()), hashed, decoded, int(refused.sum()), time.perf_counter() - start)
