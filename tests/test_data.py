"""Dataset indexing, splitting and the synthetic generator, on tiny data written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError

from ml.config.data import DataConfig, GroupConfig, SyntheticConfig
from ml.config.run import load_config
from ml.data.errors import DatasetError
from ml.data.layouts import class_names, dataset_fingerprint, index_dataset, load_image
from ml.data.splits import assign_splits, derive_groups
from ml.data.synthetic import make_shapes_dataset


def write_png(path: Path, value: int = 0, mode: str = "RGB", size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode in ("L", "P") else (value, value, value)).save(path)
    return path


def class_tree(root: Path, counts: dict[str, int], prefix: str = "img") -> Path:
    for cls, n in counts.items():
        for i in range(n):
            write_png(root / cls / f"{prefix}{i:03d}.png", value=i % 256)
    return root


def split_of(frame: pd.DataFrame) -> dict[str, str]:
    return dict(zip(frame["path"], frame["split"], strict=True))


# --- indexing --------------------------------------------------------------------------------------------


def test_class_folders_index(tmp_path: Path) -> None:
    root = class_tree(tmp_path / "d", {"b": 3, "a": 2})
    write_png(root / "a" / "UPPER.JPG")
    (root / "a" / "notes.txt").write_text("not an image")
    write_png(root / "a" / ".hidden.png")
    write_png(root / "masks" / "img000.png")
    write_png(root / ".cache" / "x.png")
    frame = index_dataset(DataConfig(root=root))
    assert list(frame.columns[:5]) == ["path", "row", "label", "group", "split"]
    assert frame["label"].tolist() == ["a"] * 3 + ["b"] * 3
    assert (frame["row"] == -1).all() and (frame["split"] == "").all()
    assert frame["group"].is_unique
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["path"])
    assert Path(frame["path"][0]).name == "UPPER.JPG"  # sorted, case-insensitive extension
    assert class_names(frame, DataConfig(root=root)) == ["a", "b"]


def test_classes_select_and_order(tmp_path: Path) -> None:
    root = class_tree(tmp_path / "d", {"a": 2, "b": 2, "c": 2})
    cfg = DataConfig(root=root, classes=["c", "a"])
    frame = index_dataset(cfg)
    assert frame["label"].tolist() == ["c", "c", "a", "a"]
    assert class_names(frame, cfg) == ["c", "a"]


def test_unknown_class_names_root_and_class(tmp_path: Path) -> None:
    root = class_tree(tmp_path / "d", {"a": 2})
    with pytest.raises(DatasetError, match=r"'zebra'.*not found") as err:
        index_dataset(DataConfig(root=root, classes=["a", "zebra"]))
    assert str(root) in str(err.value)


def test_empty_class_names_folder(tmp_path: Path) -> None:
    root = class_tree(tmp_path / "d", {"a": 2})
    (root / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty") as err:
        index_dataset(DataConfig(root=root))
    assert str(root / "empty") in str(err.value)


def test_missing_root_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=str(missing)):
        index_dataset(DataConfig(root=missing))


def test_presplit_tree_keeps_folders_split(tmp_path: Path) -> None:
    root = tmp_path / "d"
    class_tree(root / "train", {"cat": 4, "dog": 4})
    class_tree(root / "val", {"cat": 1, "dog": 2})
    cfg = DataConfig(root=root)
    frame = index_dataset(cfg)
    assert frame.groupby(["split", "label"]).size().to_dict() == {
        ("train", "cat"): 4,
        ("train", "dog"): 4,
        ("val", "cat"): 1,
        ("val", "dog"): 2,
    }
    kept = assign_splits(frame, cfg)
    assert split_of(kept) == split_of(frame)
    assert all(f"/{s}/" in p for p, s in split_of(kept).items())


def test_presplit_tree_with_a_test_folder(tmp_path: Path) -> None:
    root = tmp_path / "d"
    class_tree(root / "train", {"cat": 3, "dog": 3})
    class_tree(root / "val", {"cat": 1, "dog": 1})
    class_tree(root / "test", {"cat": 2, "dog": 1})
    cfg = DataConfig(root=root)
    kept = assign_splits(index_dataset(cfg), cfg)
    assert kept.groupby("split").size().to_dict() == {"test": 3, "train": 6, "val": 2}
    assert all(f"/{s}/" in p for p, s in split_of(kept).items())
    test_only = tmp_path / "t"  # test/ without train/ and val/ is a class folder like any other
    class_tree(test_only, {"test": 2, "cat": 2})
    assert sorted(index_dataset(DataConfig(root=test_only))["label"].unique()) == ["cat", "test"]


def test_npy_per_class(tmp_path: Path) -> None:
    root = tmp_path / "q"
    root.mkdir()
    rng = np.random.default_rng(0)
    apple = rng.integers(0, 256, size=(5, 16), dtype=np.uint8)
    np.save(root / "apple.npy", apple)
    np.save(root / "cat.npy", np.zeros((3, 16), np.uint8))
    frame = index_dataset(DataConfig(root=root, layout="npy_per_class"))
    assert frame["label"].tolist() == ["apple"] * 5 + ["cat"] * 3
    assert frame["row"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert frame["group"].is_unique
    img = load_image(frame["path"][2], 2, 1)
    assert img.shape == (4, 4, 1) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], apple[2].reshape(4, 4))
    assert load_image(frame["path"][2], 2, 3).shape == (4, 4, 3)


@pytest.mark.parametrize(
    ("array", "rule"),
    [
        (np.zeros((3, 15), np.uint8), "perfect square"),
        (np.zeros((3, 16), np.float32), "uint8"),
        (np.zeros((0, 16), np.uint8), "empty"),
    ],
)
def test_npy_rule_broken_names_file(tmp_path: Path, array: np.ndarray, rule: str) -> None:
    root = tmp_path / "q"
    root.mkdir()
    np.save(root / "bad.npy", array)
    with pytest.raises(DatasetError, match=rule) as err:
        index_dataset(DataConfig(root=root, layout="npy_per_class"))
    assert str(root / "bad.npy") in str(err.value)


def test_manifest_layout(tmp_path: Path) -> None:
    root = tmp_path / "m"
    for name in ("x/1.png", "x/2.png", "y/3.png"):
        write_png(root / name)
    pd.DataFrame(
        {
            "path": ["y/3.png", "x/1.png", "x/2.png"],
            "label": ["dog", "cat", "cat"],
            "group": ["g2", "g1", "g1"],
            "brand": ["b", "a", "a"],
        }
    ).to_csv(root / "manifest.csv", index=False)
    cfg = DataConfig(root=root, layout="manifest")
    frame = index_dataset(cfg)
    assert frame["label"].tolist() == ["cat", "cat", "dog"]
    assert frame["path"].tolist() == [str(root / "x/1.png"), str(root / "x/2.png"), str(root / "y/3.png")]
    assert frame["group"].tolist() == ["g1", "g1", "g2"]
    assert derive_groups(frame, GroupConfig(by="column", column="brand")).tolist() == ["a", "a", "b"]
    with pytest.raises(DatasetError, match="'bird'"):
        index_dataset(DataConfig(root=root, layout="manifest", classes=["bird"]))


def test_manifest_missing_file_is_named(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write_png(root / "a.png")
    pd.DataFrame({"path": ["a.png", "gone.png"], "label": ["x", "y"]}).to_csv(root / "manifest.csv", index=False)
    with pytest.raises(DatasetError, match="gone.png"):
        index_dataset(DataConfig(root=root, layout="manifest"))


def test_class_folders_group_by_side_manifest_column(tmp_path: Path) -> None:
    root = tmp_path / "logos"
    for cls, stem in [("text", "acme"), ("simple", "acme-icon"), ("simple", "zeta"), ("text", "zeta-word")]:
        write_png(root / cls / f"{stem}.png")
    pd.DataFrame({"id": ["acme", "acme-icon", "zeta", "zeta-word"], "brand": ["acme", "acme", "zeta", "zeta"]}).to_csv(
        root / "manifest.csv", index=False
    )
    cfg = DataConfig(root=root, group=GroupConfig(by="column", column="brand"), val_fraction=0.5)
    out = assign_splits(index_dataset(cfg), cfg)
    assert sorted(out["group"]) == ["acme", "acme", "zeta", "zeta"]
    assert out.groupby("group")["split"].nunique().max() == 1


def test_load_image_modes_and_unreadable(tmp_path: Path) -> None:
    grey = write_png(tmp_path / "g.png", 7, mode="L")
    assert load_image(str(grey), -1, 3).shape == (8, 8, 3)
    rgba = tmp_path / "t.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(rgba)
    assert (load_image(str(rgba), -1, 3) == 255).all()  # transparent -> white
    pal = write_png(tmp_path / "p.png", 3, mode="P")
    assert load_image(str(pal), -1, 1).shape == (8, 8, 1)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match="broken.png"):
        load_image(str(broken), -1, 3)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty.png: empty file \(0 bytes\)$"):
        load_image(str(empty), -1, 3)


# --- splits ----------------------------------------------------------------------------------------------


def test_split_deterministic_and_seeded(tmp_path: Path) -> None:
    root = class_tree(tmp_path / "d", {"a": 30, "b": 30})
    cfg = DataConfig(root=root, split_seed=1)
    frame = index_dataset(cfg)
    first, again = assign_splits(frame, cfg), assign_splits(index_dataset(cfg), cfg)
    assert split_of(first) == split_of(again)
    other = assign_splits(frame, DataConfig(root=root, split_seed=2))
    assert split_of(first) != split_of(other)
    assert set(first["split"]) == {"train", "val"}


def test_split_keeps_every_class_of_two_or_more_groups_on_both_sides(tmp_path: Path) -> None:
    root = class_tree(tmp_path / "d", {"big": 50, "mid": 20, "small": 5, "pair": 2, "one": 1})
    cfg = DataConfig(root=root, val_fraction=0.2)
    out = assign_splits(index_dataset(cfg), cfg)
    sides = out.groupby("label")["split"].agg(lambda s: s.value_counts().to_dict()).to_dict()
    assert all(sides[c].get("train", 0) >= 1 and sides[c].get("val", 0) >= 1 for c in ("big", "mid", "small", "pair"))
    assert sides["pair"] == {"train": 1, "val": 1} and sides["one"] == {"train": 1}  # one group cannot be split
    assert 4 <= sides["big"]["val"] <= 16  # Binomial(50, 0.2): 10 +- 2.8 (s.d.)


# one group of two samples per `group`; `start` numbers the groups, so growth adds new groups to every class
def frame_of(counts: dict[str, int], start: int = 0, per_group: int = 2) -> pd.DataFrame:
    rows = [(c, g, k) for c, n in counts.items() for g in range(start, start + n) for k in range(per_group)]
    return pd.DataFrame(
        {
            "path": [f"/d/{c}/g{g:05d}_{k}.png" for c, g, k in rows],
            "row": -1,
            "label": [c for c, _, _ in rows],
            "group": [f"{c}/g{g:05d}" for c, g, _ in rows],
            "split": "",
        }
    )


TEN = {f"c{i}": 100 for i in range(10)}  # 10 classes x 200 samples (100 groups of 2)


@pytest.mark.parametrize("growth", [0.1, 0.5, 2.0])
def test_growing_the_data_never_moves_an_old_sample(growth: float) -> None:
    cfg = DataConfig(val_fraction=0.2, test_fraction=0.1)
    night1 = assign_splits(frame_of(TEN), cfg)
    new = frame_of({c: int(n * growth) for c, n in TEN.items()}, start=max(TEN.values()))
    night2 = assign_splits(pd.concat([frame_of(TEN), new], ignore_index=True), cfg)
    before, after = split_of(night1), split_of(night2)
    assert {p: after[p] for p in before} == before
    assert set(after.values()) == {"train", "val", "test"}


def test_split_fractions_per_class_within_binomial_tolerance() -> None:
    # each group is one draw: a class of n groups has Binomial(n, f) of them on a side, s.d. sqrt(f (1 - f) / n)
    one = {f"c{i}": 200 for i in range(10)}  # 10 classes x 200 single-sample groups
    cfg = DataConfig(val_fraction=0.2, test_fraction=0.1)
    out = assign_splits(frame_of(one, per_group=1), cfg)
    share = out.groupby("label")["split"].value_counts(normalize=True).unstack(fill_value=0)
    for side, f in (("val", 0.2), ("test", 0.1)):
        sd = (f * (1 - f) / 200) ** 0.5
        assert (share[side] - f).abs().max() <= 3.5 * sd, (side, share[side].to_dict())
        assert abs((out["split"] == side).mean() - f) <= 3 * (f * (1 - f) / 2000) ** 0.5


def test_split_never_puts_a_group_on_two_sides() -> None:
    frame = frame_of(TEN, per_group=3)
    frame.loc[frame.index % 7 == 0, "label"] = "c0"  # groups that span classes, too
    out = assign_splits(frame, DataConfig(val_fraction=0.3, test_fraction=0.2))
    assert out.groupby("group")["split"].nunique().max() == 1


def test_split_is_a_function_of_the_groups_and_the_seed() -> None:
    cfg = DataConfig(val_fraction=0.2, test_fraction=0.1)
    frame = frame_of(TEN)
    first = split_of(assign_splits(frame, cfg))
    shuffled = frame.sample(frac=1, random_state=3).reset_index(drop=True)  # row order does not matter
    assert split_of(assign_splits(shuffled, cfg)) == first
    other = split_of(assign_splits(frame, cfg.model_copy(update={"split_seed": 1})))
    assert other != first and set(other.values()) == set(first.values())


def test_test_fraction_zero_gives_no_test_rows() -> None:
    out = assign_splits(frame_of(TEN), DataConfig(val_fraction=0.2))
    assert set(out["split"]) == {"train", "val"}
    with_test = assign_splits(frame_of(TEN), DataConfig(val_fraction=0.2, test_fraction=0.1))
    # the val band sits above the test band: adding a test share changes which groups are val, never val's share
    assert abs((with_test["split"] == "val").mean() - 0.2) < 0.05


def test_given_split_column_is_kept_test_included() -> None:
    frame = frame_of({"a": 4, "b": 4}, per_group=1)
    frame["split"] = ["train", "val", "test", "train"] * 2
    out = assign_splits(frame, DataConfig(val_fraction=0.5, test_fraction=0.3))
    assert out["split"].tolist() == frame["split"].tolist()
    frame.loc[0, "split"] = "holdout"
    with pytest.raises(DatasetError, match="holdout"):
        assign_splits(frame, DataConfig())


def test_a_given_split_without_test_rows_gets_test_from_train_only() -> None:
    frame = frame_of(TEN)
    frame["split"] = frame["group"].str[-1].isin(["0", "5"]).map({True: "val", False: "train"})
    out = assign_splits(frame, DataConfig(test_fraction=0.2))
    assert (out["split"] == "val").tolist() == (frame["split"] == "val").tolist()  # validation as given
    moved = out.loc[frame["split"] == "train", "split"]
    assert abs((moved == "test").mean() - 0.2) < 0.05 and out.groupby("group")["split"].nunique().max() == 1
    assert out["split"].tolist() != frame["split"].tolist()
    assert assign_splits(frame, DataConfig())["split"].tolist() == frame["split"].tolist()  # none asked: as given


def test_val_plus_test_fraction_below_one_at_config_load() -> None:
    with pytest.raises(ValidationError, match="must be < 1"):
        load_config("demo", ["data.val_fraction=0.5", "data.test_fraction=0.5"])
    assert load_config("demo", ["data.val_fraction=0.5", "data.test_fraction=0.4"]).data.test_fraction == 0.4
    assert load_config("demo").data.test_fraction == 0.0


def test_regex_groups_never_straddle(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for cls in ("a", "b"):
        for subject in range(8):
            for take in range(3):
                write_png(root / cls / f"subj{cls}{subject}_take{take}.png")
    write_png(root / "a" / "nomatch.png")
    cfg = DataConfig(root=root, group=GroupConfig(by="regex", pattern=r"^(subj\w\d)_"), val_fraction=0.25)
    with pytest.raises(DatasetError, match="nomatch.png"):
        assign_splits(index_dataset(cfg), cfg)
    (root / "a" / "nomatch.png").unlink()
    out = assign_splits(index_dataset(cfg), cfg)
    assert out["group"].nunique() == 16
    assert out.groupby("group")["split"].nunique().max() == 1
    assert set(out.loc[out["split"] == "val", "label"]) == {"a", "b"}


def test_tile_groups_keep_exposures_together(tmp_path: Path) -> None:
    root = tmp_path / "defects"
    names = {
        "defective": [
            "blowhole_exp1_num_100",
            "blowhole_exp2_num_150",
            "blowhole_exp3_num_290",
            "blowhole_exp1_num_5000",
            "blowhole_exp2_num_5020",
            "crack_exp1_num_120",
            "crack_exp2_num_130",
            "crack_exp1_num_9000",
        ],
        "ok": [f"free_exp{e}_num_{t * 1000 + e * 30}" for t in range(1, 7) for e in range(1, 4)],
    }
    for cls, stems in names.items():
        for stem in stems:
            write_png(root / cls / f"{stem}.jpg")
    cfg = DataConfig(root=root, classes=["ok", "defective"], group=GroupConfig(by="tile"), val_fraction=0.3)
    frame = index_dataset(cfg)
    groups = dict(zip(frame["path"].map(lambda p: Path(p).stem), derive_groups(frame, cfg.group), strict=True))
    assert groups["blowhole_exp1_num_100"] == groups["blowhole_exp2_num_150"] == groups["blowhole_exp3_num_290"]
    assert groups["blowhole_exp1_num_5000"] == groups["blowhole_exp2_num_5020"] != groups["blowhole_exp1_num_100"]
    assert groups["crack_exp1_num_120"] != groups["blowhole_exp1_num_100"]  # other type, other tile
    assert len(set(groups.values())) == 4 + 6
    out = assign_splits(frame, cfg)
    assert out.groupby("group")["split"].nunique().max() == 1
    assert set(out.loc[out["split"] == "val", "label"]) == {"ok", "defective"}
    write_png(root / "ok" / "IMG_0001.jpg")
    with pytest.raises(DatasetError, match="IMG_0001.jpg"):
        derive_groups(index_dataset(cfg), cfg.group)


# --- fingerprint and generator ---------------------------------------------------------------------------


def test_fingerprint_tracks_content(tmp_path: Path) -> None:
    root = class_tree(tmp_path / "d", {"a": 3, "b": 3})
    cfg = DataConfig(root=root)
    before = dataset_fingerprint(index_dataset(cfg))
    assert dataset_fingerprint(index_dataset(cfg)) == before
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    assert dataset_fingerprint(index_dataset(DataConfig(root=moved))) == before  # root location not hashed
    write_png(moved / "a" / "img001.png", value=200)
    assert dataset_fingerprint(index_dataset(DataConfig(root=moved))) != before


def test_synthetic_deterministic_counts_and_atomic(tmp_path: Path) -> None:
    cfg = SyntheticConfig(per_class=5, size=16, seed=3)
    one, two = make_shapes_dataset(tmp_path / "one", cfg), make_shapes_dataset(tmp_path / "two", cfg)
    files = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert len(files) == 4 * 5
    assert sorted(d.name for d in one.iterdir()) == sorted(cfg.classes)
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    assert load_image(str(one / files[0]), -1, 3).shape == (16, 16, 3)
    other = make_shapes_dataset(tmp_path / "other", cfg.model_copy(update={"seed": 4}))
    assert any((one / f).read_bytes() != (other / f).read_bytes() for f in files)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    with pytest.raises(FileExistsError):
        make_shapes_dataset(one, cfg)


def test_synthetic_more_classes_than_shapes_are_distinct(tmp_path: Path) -> None:
    classes = [f"k{i}" for i in range(10)]
    root = make_shapes_dataset(tmp_path / "many", SyntheticConfig(classes=classes, per_class=2, size=16))
    cfg = DataConfig(root=root)
    assert class_names(index_dataset(cfg), cfg) == sorted(classes)
    with pytest.raises(ValueError, match="unique"):
        make_shapes_dataset(tmp_path / "dup", SyntheticConfig(classes=["a", "a"], per_class=2))


def test_binary_target_vs_rest_keeps_the_source_label(tmp_path):
    from ml.data.prepare import prepare_dataset

    make_shapes_dataset(tmp_path / "d", SyntheticConfig(per_class=10))
    prepared = prepare_dataset(DataConfig(root=tmp_path / "d", binary_target="circle"), tmp_path / "out")
    assert prepared.classes == ["not_circle", "circle"]  # the positive class is index 1
    split = pd.read_csv(prepared.split_csv)
    assert set(split.loc[split.label == "not_circle", "source_label"]) == {"cross", "square", "triangle"}
    assert sum(prepared.counts["train"].values()) + sum(prepared.counts["val"].values()) == 40
    with pytest.raises(DatasetError, match="binary_target 'fish'"):
        prepare_dataset(DataConfig(root=tmp_path / "d", binary_target="fish"), tmp_path / "out2")


def test_prepared_counts_include_test_only_when_there_is_one(tmp_path):
    from ml.data.prepare import prepare_dataset

    make_shapes_dataset(tmp_path / "d", SyntheticConfig(per_class=20))
    plain = prepare_dataset(DataConfig(root=tmp_path / "d"), tmp_path / "plain")
    assert list(plain.counts) == ["train", "val"]
    held = prepare_dataset(DataConfig(root=tmp_path / "d", test_fraction=0.25), tmp_path / "held")
    assert list(held.counts) == ["train", "val", "test"] and sum(held.counts["test"].values()) > 0
    assert held.counts["val"] == plain.counts["val"]  # test comes out of train only
    split = pd.read_csv(held.split_csv)
    assert {s: sum(n.values()) for s, n in held.counts.items()} == split["split"].value_counts().to_dict()
