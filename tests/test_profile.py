"""Profiling (one metadata row per sample, cached by content) and the image+mask layouts, on tiny files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ml.config.data import DataConfig, SyntheticConfig
from ml.core.files import sha256_file
from ml.data.errors import DatasetError
from ml.data.layouts import index_dataset
from ml.data.masks import load_mask
from ml.data.profile import profile_dataset
from ml.data.synthetic import make_shapes_dataset


def noise_png(path: Path, seed: int, size: tuple[int, int] = (16, 16), mode: str = "RGB") -> Path:
    """A unique image (random pixels), so no two test files share bytes by accident."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def mask_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def shapes(root: Path, per_class: int = 4) -> Path:
    return make_shapes_dataset(root, SyntheticConfig(classes=["circle", "square"], per_class=per_class, size=16))


def by_name(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index(frame["path"].map(lambda p: Path(p).name))


def test_profile_columns_and_values(tmp_path: Path) -> None:
    root = shapes(tmp_path / "d")
    noise_png(root / "circle" / "grey.png", 1, size=(20, 10), mode="L")
    frame = index_dataset(DataConfig(root=root))
    prof = profile_dataset(frame, root)
    out = prof.frame
    assert len(out) == len(frame) == 9 and out["path"].tolist() == frame["path"].tolist()
    assert out["readable"].all() and (out["format"] == "PNG").all() and (out["error"] == "").all()
    grey = by_name(out).loc["grey.png"]
    assert (grey["width"], grey["height"], grey["channels"]) == (20, 10, 1)
    rgb = by_name(out).loc["0.png"].iloc[0]
    assert (rgb["width"], rgb["height"], rgb["channels"]) == (16, 16, 3)
    assert rgb["sha256"] == sha256_file(rgb["path"]) and rgb["bytes"] == os.path.getsize(rgb["path"])
    assert 0 < rgb["brightness"] < 255 and rgb["contrast"] > 0 and rgb["blur"] > 0
    flat = tmp_path / "flat" / "x" / "flat.png"
    noise_png(flat, 0)
    Image.new("L", (8, 8), 77).save(flat)
    one = profile_dataset(index_dataset(DataConfig(root=flat.parent.parent)), flat.parent.parent).frame.iloc[0]
    assert (one["brightness"], one["contrast"], one["blur"]) == (77, 0, 0)
    assert (prof.hits, prof.hashed, prof.decoded, prof.refused) == (0, 9, 9, 0)


def test_unchanged_dataset_is_served_from_cache(tmp_path: Path) -> None:
    root, cache = shapes(tmp_path / "d"), tmp_path / "cache" / "profile-x.parquet"
    frame = index_dataset(DataConfig(root=root))
    cold = profile_dataset(frame, root, cache)
    assert (cold.hits, cold.hashed, cold.decoded) == (0, 8, 8) and cache.is_file()
    warm = profile_dataset(frame, root, cache)
    assert (warm.hits, warm.hashed, warm.decoded) == (8, 0, 0)
    pd.testing.assert_frame_equal(warm.frame, cold.frame)


def test_a_changed_file_is_rehashed_alone(tmp_path: Path) -> None:
    root, cache = shapes(tmp_path / "d"), tmp_path / "profile.parquet"
    cfg = DataConfig(root=root)
    profile_dataset(index_dataset(cfg), root, cache)
    noise_png(root / "square" / "1.png", 5, size=(24, 24))  # new content
    changed = profile_dataset(index_dataset(cfg), root, cache)
    assert (changed.hits, changed.hashed, changed.decoded) == (7, 1, 1)
    assert by_name(changed.frame).loc["1.png"].set_index("label").loc["square", "width"] == 24

    os.utime(root / "circle" / "2.png", ns=(1, 1))  # new mtime, same bytes: hashed again, not decoded
    (root / "circle" / "3.png").rename(root / "circle" / "renamed.png")  # known content under a new name
    touched = profile_dataset(index_dataset(cfg), root, cache)
    assert (touched.hits, touched.hashed, touched.decoded) == (6, 2, 0)
    assert by_name(touched.frame).loc["renamed.png", "readable"]


def test_npy_rows_are_profiled_and_cached_per_row(tmp_path: Path) -> None:
    root, cache = tmp_path / "q", tmp_path / "profile.parquet"
    root.mkdir()
    rows = np.random.default_rng(0).integers(0, 256, (5, 64), dtype=np.uint8)
    rows[4] = rows[0]  # a duplicate row: same content hash
    np.save(root / "apple.npy", rows)
    np.save(root / "cat.npy", np.zeros((2, 64), np.uint8))
    cfg = DataConfig(root=root, layout="npy_per_class")
    prof = profile_dataset(index_dataset(cfg), root, cache)
    out = prof.frame
    assert out["file"].tolist()[:2] == [f"{root / 'apple.npy'}#0", f"{root / 'apple.npy'}#1"]
    assert (out["width"] == 8).all() and (out["channels"] == 1).all() and (out["format"] == "NPY").all()
    assert out["sha256"].iloc[0] == out["sha256"].iloc[4] != out["sha256"].iloc[1]
    assert (prof.hashed, prof.decoded) == (7, 7)
    rows[2] = 255 - rows[2]
    np.save(root / "apple.npy", rows)  # one row changed: the file is re-read, only that row decoded
    again = profile_dataset(index_dataset(cfg), root, cache)
    assert (again.hits, again.hashed, again.decoded) == (2, 5, 1)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.png", b"", "empty file (0 bytes)"),
        ("text.png", b"just some notes, not an image\n", "cannot identify image file"),
        ("truncated.png", None, "truncated"),
        ("truncated.jpg", None, "truncated"),
    ],
)
def test_broken_files_are_unreadable_with_the_decoders_error(tmp_path, name, content, message) -> None:
    root = shapes(tmp_path / "d")
    path = root / "circle" / name
    if content is None:  # a real image cut in half
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        noise_png(tmp_path / "whole.png", 3, size=(64, 64))
        Image.open(tmp_path / "whole.png").save(tmp_path / "whole", fmt)
        content = (tmp_path / "whole").read_bytes()[: (tmp_path / "whole").stat().st_size // 2]
    path.write_bytes(content)
    out = by_name(profile_dataset(index_dataset(DataConfig(root=root)), root).frame)
    assert not out.loc[name, "readable"] and message in out.loc[name, "error"]
    assert "BytesIO" not in out.loc[name, "error"]  # PIL's name for bytes in memory: an address, no help
    assert out.drop(index=name)["readable"].all()


def test_files_outside_the_root_are_refused_unread(tmp_path: Path) -> None:
    root = tmp_path / "m"
    noise_png(root / "a" / "1.png", 1)
    noise_png(root / "a" / "2.png", 2)
    secret = noise_png(tmp_path / "secret" / "s.png", 3)
    os.symlink(secret, root / "a" / "link.png")
    os.symlink(root / "a" / "1.png", root / "a" / "inside.png")  # a link within the root is fine
    rows = [("a/1.png", "x"), ("a/2.png", "y"), ("a/link.png", "x"), ("a/inside.png", "y"), ("../secret/s.png", "y")]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(root / "manifest.csv", index=False)
    prof = profile_dataset(index_dataset(DataConfig(root=root, layout="manifest")), root)
    out = by_name(prof.frame)
    assert prof.refused == 2
    for name in ("link.png", "s.png"):
        assert not out.loc[name, "readable"] and out.loc[name, "error"].startswith("refused")
        assert str(secret) in out.loc[name, "error"] and pd.isna(out.loc[name, "sha256"])
    assert out.loc["inside.png", "readable"]


def test_image_mask_layout_and_mask_metrics(tmp_path: Path) -> None:
    root = tmp_path / "seg"
    two_blobs = np.zeros((16, 16), np.uint8)
    two_blobs[1:4, 1:4] = 255
    two_blobs[10:14, 10:12] = 255
    for i, mask in enumerate([two_blobs, two_blobs // 255, np.zeros((16, 16)), np.arange(256).reshape(16, 16)]):
        noise_png(root / "images" / f"{i}.png", i)
        mask_png(root / "masks" / f"{i}.png", mask)
    noise_png(root / "images" / "small-mask.png", 7)
    mask_png(root / "masks" / "small-mask.png", np.zeros((8, 16)))
    noise_png(root / "images" / "no-mask.png", 8)
    frame = index_dataset(DataConfig(root=root, layout="image_mask"))
    assert set(frame["label"]) == {"foreground"} and frame["group"].is_unique
    assert by_name(frame).loc["no-mask.png", "mask"] == ""
    out = by_name(profile_dataset(frame, root).frame)
    assert out.loc["0.png", ["mask_binary", "mask_same_size", "mask_components"]].tolist() == [True, True, 2]
    assert out.loc["0.png", "mask_foreground"] == pytest.approx((9 + 8) / 256)
    assert out.loc["1.png", "mask_levels"] == "0,1" and out.loc["1.png", "mask_binary"]
    assert out.loc["2.png", ["mask_foreground", "mask_components"]].tolist() == [0, 0]
    assert not out.loc["3.png", "mask_binary"] and out.loc["3.png", "mask_levels"].endswith(",...")
    assert not out.loc["small-mask.png", "mask_same_size"] and out.loc["small-mask.png", "mask_height"] == 8
    assert not out.loc["no-mask.png", "mask_present"] and pd.isna(out.loc["no-mask.png", "mask_binary"])
    assert load_mask(frame["mask"].iloc[0]).tolist() == (two_blobs > 0).astype(np.uint8).tolist()
    assert np.array_equal(load_mask(str(root / "masks" / "1.png")), load_mask(str(root / "masks" / "0.png")))


def test_masks_beside_class_folders(tmp_path: Path) -> None:
    root = shapes(tmp_path / "d")
    mask_png(root / "masks" / "1.png", np.full((16, 16), 255))
    frame = index_dataset(DataConfig(root=root, classes=["circle"]))
    assert by_name(frame)["mask"].to_dict() == {"0.png": "", "1.png": str(root / "masks" / "1.png"),
                                                "2.png": "", "3.png": ""}  # fmt: skip
    assert "mask" not in index_dataset(DataConfig(root=shapes(tmp_path / "plain"))).columns


def test_image_mask_layout_rules(tmp_path: Path) -> None:
    (tmp_path / "seg" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no .png"):
        index_dataset(DataConfig(root=tmp_path / "seg", layout="image_mask"))
    noise_png(tmp_path / "seg" / "images" / "a.png", 0)
    with pytest.raises(DatasetError, match="one foreground class"):
        index_dataset(DataConfig(root=tmp_path / "seg", layout="image_mask", classes=["a", "b"]))
    assert set(index_dataset(DataConfig(root=tmp_path / "seg", layout="image_mask", classes=["ink"]))["label"]) == {
        "ink"
    }
