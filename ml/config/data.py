"""Where the images are and how they split: layout, classes, grouping, generated data, expectations."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ml.config.section import Section


class GroupConfig(Section):
    """How near-duplicates are kept on one side of a split."""

    by: Literal["none", "column", "regex", "tile"] = "none"
    column: str | None = None  # manifest column, for by=column
    pattern: str | None = None  # regex on the file name; group = first capture group (or whole match)
    tile_gap: int = 200  # by=tile: frames of one type within this many numbers form one tile

    @model_validator(mode="after")
    def _needs_argument(self) -> GroupConfig:
        if self.by == "column" and not self.column:
            raise ValueError("group.by=column needs group.column")
        if self.by == "regex" and not self.pattern:
            raise ValueError("group.by=regex needs group.pattern")
        return self


class SyntheticConfig(Section):
    """Generated dataset (demo and tests), written when data.root is missing: shapes as class folders, or
    pages (strokes and letters on textured paper, with exact masks) as images/ + masks/ (layout image_mask)."""

    kind: Literal["shapes", "pages"] = "shapes"
    classes: list[str] = ["circle", "square", "triangle", "cross"]  # shapes only
    per_class: int = Field(60, ge=2)  # images per class (pages: pages in all)
    size: int = Field(32, ge=16)  # side in px (pages: each side drawn from 0.75-1.25 x size)
    seed: int = 0


class ExpectConfig(Section):
    """Data-validation thresholds: expectations/*.json take them as GX suite parameters ({"$PARAMETER": name})."""

    min_per_class: int = Field(2, ge=1)  # images per class (segmentation: images in all)
    max_imbalance: float | None = Field(10.0, ge=1)  # largest / smallest class; None: no limit
    allowed_channels: list[Literal[1, 2, 3, 4]] | None = None  # channels as stored (1 grey, 3 RGB, 4 RGBA); None: any
    # px, both sides of every image; the default 8 and max_aspect refuse slivers (a 1 x 20000 scan strip) that
    # resizing to image_size would turn into noise; None: no limit
    min_size: int | None = Field(8, ge=1)
    max_size: int | None = Field(None, ge=1)
    max_aspect: float | None = Field(20.0, ge=1)  # long side / short side of every image; None: no limit
    mask_foreground: tuple[float, float] = (0.0, 1.0)  # allowed foreground fraction of a non-empty mask
    max_empty_mask_share: float = Field(0.0, ge=0, le=1)  # share of masks without a foreground pixel
    allow_duplicates: bool = False  # same bytes twice in one split and class; across splits or labels always fails
    quarantine_unreadable: bool = False  # list unreadable files and continue without them instead of failing

    @model_validator(mode="after")
    def _ranges(self) -> ExpectConfig:
        lo, hi = self.mask_foreground
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"mask_foreground {self.mask_foreground} must be (min, max) with 0 <= min <= max <= 1")
        if self.min_size and self.max_size and self.min_size > self.max_size:
            raise ValueError(f"min_size {self.min_size} > max_size {self.max_size}")
        return self


class DataConfig(Section):
    root: Path = Path(".visionflow/data/demo")
    # image_mask: <root>/images/<id>.png|jpg with <root>/masks/<id>.png; class_folders also pick up <root>/masks/
    layout: Literal["class_folders", "npy_per_class", "manifest", "image_mask"] = "class_folders"
    manifest: str = "manifest.csv"  # for layout=manifest, relative to root
    classes: list[str] | None = None  # subset and order; default: every class found, sorted
    binary_target: str | None = None  # target-vs-rest: this class against every other selected class
    image_size: int = Field(32, ge=8)  # classifiers train and predict at this size; segmenters at full size
    channels: Literal[1, 3] = 3
    # training crops (px): segmenters always; classifiers with model.head=map, cut from the image_size image
    crop_size: int = Field(512, ge=32, multiple_of=32)
    foreground_crop: float = Field(0.5, ge=0, le=1)  # share of crops centred on a mask (foreground) pixel
    crops_per_image: int = Field(8, ge=1)  # random crops of each training image per epoch
    val_fraction: float = Field(0.2, gt=0, lt=1)  # share of each class's groups in val (by hash: see ml.data.splits)
    test_fraction: float = Field(0.0, ge=0, lt=1)  # share in a test split beside train/val; 0: none
    split_seed: int = 0
    group: GroupConfig = GroupConfig()
    synthetic: SyntheticConfig | None = None  # generate the dataset if root does not exist
    expect: ExpectConfig = ExpectConfig()
    cache_dir: Path | None = None  # profile cache (profile-<name>.parquet); default: <storage.workdir>/../cache

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            total = f"val_fraction {self.val_fraction} + test_fraction {self.test_fraction}"
            raise ValueError(f"{total} must be < 1 (train needs a share)")
        return self
