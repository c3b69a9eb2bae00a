"""From a DataConfig to a split table on disk: generate (demo), index, check, split, fingerprint.

Later steps read `split.csv` (path, row, label, group, split), so every step of one run sees the
same samples, and a re-run of a crashed flow sees them too.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ml.config.data import DataConfig
from ml.core.files import sha256_bytes, sha256_file
from ml.data.errors import DatasetError
from ml.data.layouts import class_names, dataset_fingerprint, index_dataset, load_image
from ml.data.splits import assign_splits
from ml.data.synthetic import make_shapes_dataset
from ml.data.synthetic_pages import make_pages_dataset


@dataclass
class PreparedData:
    split_csv: str
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> images; "test" only when the split has test rows
    fingerprint: str
    root: str
    generated: bool  # the synthetic generator wrote the dataset in this run
    profile: str = ""  # the run's dataset profile (parquet, one row per sample) when ml.data.validation made it
    quarantined: list[str] = field(default_factory=list)  # unreadable files left out (expect.quarantine_unreadable)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def split_id(self) -> str:
        """Hash of split.csv (files, labels, sides): what caches and checkpoints made from this split are keyed by."""
        return hashlib.sha256(Path(self.split_csv).read_bytes()).hexdigest()[:16]

    @property
    def judged_side(self) -> str:
        """The split the gate judges: "test" when there is one (nothing was chosen on it), else "val"."""
        return "test" if "test" in self.counts else "val"


def unreadable_files(frame: pd.DataFrame, channels: int) -> list[tuple[str, str]]:
    """(file, decoder error) for every sample that does not decode; reads each file once, in threads."""

    def check(item: tuple[str, int]) -> tuple[str, str] | None:
        try:
            load_image(item[0], item[1], channels)
        except DatasetError as err:
            return item[0], str(err)
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        found = pool.map(check, zip(frame["path"], frame["row"], strict=True))
    return [f for f in found if f is not None]


def check_basic(frame: pd.DataFrame, cfg: DataConfig, classes: list[str]) -> None:
    """Every image readable, every class non-empty; raises DatasetError naming the files and the rule."""
    problems = []
    empty = [c for c in classes if not (frame["label"] == c).any()]
    if empty:
        problems.append(f"rule 'every class non-empty' broken in {cfg.root}: no images for {empty}")
    bad = unreadable_files(frame, cfg.channels)
    if bad:
        shown = "\n".join(f"  {path}: {err}" for path, err in bad[:20])
        problems.append(f"rule 'every image readable' broken by {len(bad)} file(s) (first 20):\n{shown}")
    if problems:
        raise DatasetError("\n".join(problems))


def load_frame(cfg: DataConfig) -> tuple[pd.DataFrame, bool]:
    """The indexed dataset, and whether the demo's synthetic set was generated for it first."""
    generated = False
    if cfg.synthetic is not None and not cfg.root.exists():
        make = make_pages_dataset if cfg.synthetic.kind == "pages" else make_shapes_dataset
        make(cfg.root, cfg.synthetic)
        generated = True
    frame = index_dataset(cfg)
    return (binary_relabel(frame, cfg.binary_target, cfg.root) if cfg.binary_target else frame), generated


def binary_relabel(frame: pd.DataFrame, target: str, root: Path) -> pd.DataFrame:
    """Target-vs-rest: `target` stays, every other class becomes `not_<target>`; `source_label` keeps the original
    (so hard negatives can still be told apart in reports)."""
    if not (frame["label"] == target).any():
        classes = sorted(frame["label"].unique())
        raise DatasetError(f"{root}: data.binary_target {target!r} is not among the classes {classes}")
    out = frame.assign(source_label=frame["label"])
    out["label"] = out["label"].where(out["label"] == target, f"not_{target}")
    return out


def split_frame(frame: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """assign_splits, refusing a split with an empty side."""
    split = assign_splits(frame, cfg)
    for side in ("train", "val"):
        if not (split["split"] == side).any():
            raise DatasetError(f"{cfg.root}: the {side} split is empty (val_fraction={cfg.val_fraction})")
    return split


def write_prepared(
    split: pd.DataFrame,
    cfg: DataConfig,
    classes: list[str],
    out_dir: Path,
    generated: bool,
    known: dict[str, str] | None = None,
    **extra,
) -> PreparedData:
    """Writes out_dir/split.csv; `known` file digests (from the profile) spare re-reading files to fingerprint."""
    out_dir.mkdir(parents=True, exist_ok=True)
    split_csv = out_dir / "split.csv"
    split.to_csv(split_csv, index=False)
    sides = ("train", "val", "test") if (split["split"] == "test").any() else ("train", "val")
    counts = {
        side: {c: int(((split["split"] == side) & (split["label"] == c)).sum()) for c in classes} for side in sides
    }
    fingerprint = dataset_fingerprint(split, known)
    return PreparedData(str(split_csv), classes, counts, fingerprint, str(cfg.root), generated, **extra)


def prepare_dataset(cfg: DataConfig, out_dir: Path) -> PreparedData:
    """Index, check and split the dataset of `cfg`; writes out_dir/split.csv (ml.data.validation adds profile + GX)."""
    frame, generated = load_frame(cfg)
    classes = class_names(frame, cfg)
    check_basic(frame, cfg, classes)
    return write_prepared(split_frame(frame, cfg), cfg, classes, out_dir, generated)


def sample_digests(prepared: PreparedData) -> pd.DataFrame:
    """split.csv with each sample's content sha256 (npy rows: the row's bytes, as the profile hashes them): what
    a version's training list holds, so a renamed or moved copy of an image is still the same image."""
    split = pd.read_csv(prepared.split_csv, keep_default_na=False)
    known: dict[tuple[str, int], str] = {}
    if prepared.profile:
        profile = pd.read_parquet(prepared.profile, columns=["path", "row", "sha256"])
        known = dict(zip(zip(profile["path"], profile["row"], strict=True), profile["sha256"], strict=True))

    def digest(key: tuple[str, int]) -> str:
        if key in known:
            return known[key]
        path, row = key
        if row < 0:
            return sha256_file(path)
        return sha256_bytes(np.ascontiguousarray(np.load(path, mmap_mode="r")[row]).tobytes())

    keys = list(zip(split["path"], split["row"].astype(int), strict=True))
    with ThreadPoolExecutor(max_workers=4) as pool:
        return split.assign(sha256=list(pool.map(digest, keys)))
