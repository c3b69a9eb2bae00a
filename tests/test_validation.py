"""Data validation with the real Great Expectations suites: each bad input fails (or is quarantined) by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from great_expectations.core import ExpectationSuite
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.retrain import retrain
from flows.validate_data import validate_data_flow
from ml.config.data import ExpectConfig
from ml.config.run import RunConfig, load_config
from ml.data.validation import EXPECTATIONS, ValidationReport, class_table, suite_parameters, validate_dataset
from ml.training.samplers import weighted_sampler
from tests.conftest import tiny_overrides
from tests.test_profile import mask_png, noise_png

ROOT = Path(__file__).resolve().parent.parent


def config(tmp: Path, **extra) -> RunConfig:
    return load_config("demo", tiny_overrides(tmp, **extra))


def tree(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """Class folders of unique random images; `train/a` style keys give a pre-split tree."""
    for k, (cls, n) in enumerate(counts.items()):
        for i in range(n):
            noise_png(root / cls / f"{Path(cls).name}{i:02d}.png", seed * 1000 + k * 100 + i)
    return root


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def failed(report: ValidationReport) -> dict[str, str]:
    """rule -> its report text (threshold, observed, offending files) for each failed rule."""
    return {r.rule: f"{r.threshold} | {r.observed} | {r.count} | " + "\n".join(r.offending) for r in report.failures()}


def validate(tmp: Path, **extra) -> ValidationReport:
    return validate_dataset(config(tmp, **extra), tmp / "run")


# --- the suites -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["classification", "segmentation"])
def test_suite_templates_load_and_every_parameter_comes_from_config(kind: str) -> None:
    spec = json.loads((EXPECTATIONS / f"{kind}.json").read_text())
    suite = ExpectationSuite(**spec)
    assert len(suite.expectations) == len(spec["expectations"])
    rules = [e["meta"]["rule"] for e in spec["expectations"]]
    assert len(set(rules)) == len(rules)
    names = {v["$PARAMETER"] for e in spec["expectations"] for v in e["kwargs"].values() if isinstance(v, dict)}
    assert names <= set(suite_parameters(ExpectConfig()))


def test_clean_dataset_passes_writes_split_and_profile(tmp_path: Path) -> None:
    report = validate(tmp_path)
    assert report.passed, report.markdown()
    prepared = report.prepared
    split = pd.read_csv(prepared.split_csv, keep_default_na=False)
    assert len(split) == 48 and set(split["split"]) == {"train", "val"}
    assert len(pd.read_parquet(prepared.profile)) == 48
    assert [c["total"] for c in report.classes] == [12] * 4
    assert report.stats["images"] == 48 and report.stats["unreadable"] == 0
    assert "## Data validation of `demo`: passed" in report.markdown()
    again = validate(tmp_path)
    assert "48 from cache, 0 hashed" in again.stats["profile"]
    assert again.prepared.fingerprint == prepared.fingerprint


# --- image integrity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("broken", ["zero-byte.png", "truncated.png", "truncated.jpg", "text.png"])
def test_unreadable_image_fails_naming_the_file(tmp_path: Path, broken: str) -> None:
    root = tree(tmp_path / "data", {"a": 6, "b": 6})
    path = root / "a" / broken
    if broken.startswith("truncated"):
        noise_png(tmp_path / "x.png", 9, size=(64, 64))
        Image.open(tmp_path / "x.png").save(path, "JPEG" if broken.endswith(".jpg") else "PNG")
        truncate(path)
    else:
        path.write_bytes(b"" if broken.startswith("zero") else b"hello, not an image")
    report = validate(tmp_path)
    assert list(failed(report)) == ["every image readable"]
    says = "empty file (0 bytes)" if broken.startswith("zero") else "cannot decode"
    assert f"{path}: {says}" in failed(report)["every image readable"]
    assert report.prepared is None and not (tmp_path / "run" / "split.csv").exists()


def test_quarantine_lists_unreadable_files_and_continues_without_them(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"a": 6, "b": 6})
    bad = truncate(root / "b" / "b03.png")
    report = validate(tmp_path, **{"data.expect.quarantine_unreadable": True})
    assert report.passed, report.markdown()
    assert len(report.quarantined) == 1 and report.quarantined[0].startswith(f"{bad}: cannot decode")
    assert report.prepared.quarantined == report.quarantined
    split = pd.read_csv(report.prepared.split_csv)
    assert len(split) == 11 and str(bad) not in set(split["path"])
    assert "Quarantined: 1 unreadable file(s)" in report.markdown()


def test_paths_outside_the_root_are_refused(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"a": 3, "b": 3})
    outside = noise_png(tmp_path / "elsewhere" / "passwd.png", 42)
    os.symlink(outside, root / "a" / "link.png")
    manifest = [(str(p.relative_to(root)), p.parent.name) for p in sorted(root.rglob("*.png"))]
    manifest.append(("../elsewhere/passwd.png", "b"))
    pd.DataFrame(manifest, columns=["path", "label"]).to_csv(root / "manifest.csv", index=False)
    text = failed(validate(tmp_path, **{"data.layout": "manifest"}))["every image readable"]
    assert f"{root / 'a' / 'link.png'}: refused" in text and f"{outside}: refused" in text


def test_mixed_grey_and_rgb_fail_when_channels_are_fixed(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"a": 4, "b": 4})
    grey = noise_png(root / "b" / "grey.png", 7, mode="L")
    assert validate(tmp_path).passed  # any channels by default
    text = failed(validate(tmp_path, **{"data.expect.allowed_channels": [3]}))["allowed channels"]
    assert f"{grey}: 1 channel(s), PNG" in text and "| 1 |" in text


def test_size_limits(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"a": 4, "b": 4})
    small = noise_png(root / "a" / "small.png", 5, size=(16, 6))
    found = failed(validate(tmp_path, **{"data.expect.min_size": 8, "data.expect.max_size": 16}))
    assert list(found) == ["image height within size limits"]
    assert f"{small}: 16x6 px" in found["image height within size limits"]


def test_slivers_are_refused_by_default_unless_the_rules_are_off(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"a": 4, "b": 4})
    sliver = noise_png(root / "a" / "sliver.png", 5, size=(1, 2000))  # PIL size: 1 px wide, 2000 px high
    found = failed(validate(tmp_path))
    assert list(found) == [
        "image width within size limits",
        "image aspect ratio (long side / short side) within max_aspect",
    ]
    assert f"{sliver}: 1x2000 px" in found["image width within size limits"]
    assert "min_value = 8 (data.expect.min_size)" in found["image width within size limits"]
    aspect = found["image aspect ratio (long side / short side) within max_aspect"]
    assert f"{sliver}: 1x2000 px, long side / short side 2000" in aspect and "max_value = 20.0" in aspect
    assert validate(tmp_path, **{"data.expect.min_size": None, "data.expect.max_aspect": None}).passed
    wide = noise_png(root / "b" / "wide.png", 6, size=(400, 10))  # both sides >= 8 px: only the aspect rule
    found = failed(validate(tmp_path, **{"data.expect.min_size": None}))
    assert list(found) == ["image aspect ratio (long side / short side) within max_aspect"]
    assert str(wide) in found["image aspect ratio (long side / short side) within max_aspect"]
    assert validate(tmp_path, **{"data.expect.min_size": None, "data.expect.max_aspect": None}).passed


# --- classes ----------------------------------------------------------------------------------------------


def test_too_small_class_fails_min_per_class(tmp_path: Path) -> None:
    tree(tmp_path / "data", {"a": 10, "b": 10, "c": 3})
    found = failed(validate(tmp_path, **{"data.expect.min_per_class": 5}))
    assert list(found) == ["min images per class"]
    text = found["min images per class"]
    assert "min_value = 5 (data.expect.min_per_class)" in text
    assert "class 'c': 3 images (2 train, 1 val, 0 test)" in text


def test_a_class_missing_from_a_split_fails_naming_it(tmp_path: Path) -> None:
    # every image of class c is one group (one tile, one brand): it cannot be split, so val would have none of c
    tree(tmp_path / "data", {"a": 6, "b": 6, "c": 6})
    found = failed(validate(tmp_path, **{"data.group.by": "regex", "data.group.pattern": r"^(c|[ab]\d+)"}))
    rule = "every class in the val split (a class in one group cannot be split)"
    assert list(found) == [rule] and "class 'c': 6 images (6 train, 0 val, 0 test)" in found[rule]
    # a pre-split tree whose val side lacks a class
    tree(tmp_path / "pre", {"train/a": 4, "train/b": 4, "val/a": 2})
    found = failed(validate(tmp_path, **{"data.root": str(tmp_path / "pre")}))
    assert list(found) == [rule] and "class 'b': 4 images (4 train, 0 val, 0 test)" in found[rule]


def test_empty_class_folder_fails_naming_it(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"a": 4, "b": 4})
    (root / "empty").mkdir()
    found = failed(validate(tmp_path))
    assert list(found) == ["dataset layout and split"] and str(root / "empty") in found["dataset layout and split"]


def test_a_data_class_not_on_disk_fails_naming_the_classes_found(tmp_path: Path) -> None:
    tree(tmp_path / "data", {"a": 4, "b": 4})
    found = failed(validate(tmp_path, **{"data.classes": ["a", "zebra"]}))["dataset layout and split"]
    assert "class(es) ['zebra'] not found" in found and "found ['a', 'b']" in found


def test_one_class_fails(tmp_path: Path) -> None:
    tree(tmp_path / "data", {"only": 8})
    found = failed(validate(tmp_path))
    assert list(found) == ["at least two classes"] and "class 'only'" in found["at least two classes"]


def test_imbalance_beyond_the_ratio_fails(tmp_path: Path) -> None:
    tree(tmp_path / "data", {"big": 30, "small": 4})
    assert validate(tmp_path).passed  # 7.5 <= the default 10
    found = failed(validate(tmp_path, **{"data.expect.max_imbalance": 5}))
    assert list(found) == ["max imbalance (largest class / this class)"]
    assert "class 'small': 4 images" in found["max imbalance (largest class / this class)"]


# --- duplicates -------------------------------------------------------------------------------------------


def test_same_image_in_train_and_val_is_leakage_with_both_paths(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"train/a": 4, "train/b": 4, "val/a": 2, "val/b": 2})
    shutil.copy(root / "train" / "a" / "a01.png", root / "val" / "a" / "copy.png")
    found = failed(validate(tmp_path))
    assert list(found) == ["no image in both train and val (leakage)"]
    text = found["no image in both train and val (leakage)"]
    assert f"{root / 'val' / 'a' / 'copy.png'}: same bytes as {root / 'train' / 'a' / 'a01.png'} (train, a)" in text
    assert f"{root / 'train' / 'a' / 'a01.png'}: same bytes as {root / 'val' / 'a' / 'copy.png'} (val, a)" in text


def test_test_rows_pass_validation_and_a_copy_in_test_is_leakage(tmp_path: Path) -> None:
    report = validate(tmp_path / "generated", **{"data.test_fraction": 0.25})
    assert report.passed, report.markdown()
    split = pd.read_csv(report.prepared.split_csv, keep_default_na=False)
    assert len(split) == 48 and set(split["split"]) == {"train", "val", "test"}
    assert set(report.prepared.counts) == {"train", "val", "test"}  # test rows counted, kept in split.csv
    root = tree(tmp_path / "data", {"train/a": 4, "train/b": 4, "val/a": 2, "val/b": 2, "test/a": 1})
    shutil.copy(root / "train" / "b" / "b01.png", root / "test" / "a" / "copy.png")
    found = failed(validate(tmp_path))
    assert list(found) == ["no image in both train and val (leakage)", "no image under two labels (label conflict)"]
    assert f"{root / 'train' / 'b' / 'b01.png'}: same bytes as {root / 'test' / 'a' / 'copy.png'} (test, a)" in str(
        found
    )


def test_same_image_under_two_labels_is_a_label_conflict(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"train/a": 4, "train/b": 4, "val/a": 2, "val/b": 2})
    shutil.copy(root / "train" / "a" / "a02.png", root / "train" / "b" / "also-b.png")
    found = failed(validate(tmp_path))
    assert list(found) == ["no image under two labels (label conflict)"]
    assert str(root / "train" / "b" / "also-b.png") in found["no image under two labels (label conflict)"]


def test_duplicates_within_a_split_fail_unless_allowed(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"train/a": 4, "train/b": 4, "val/a": 2, "val/b": 2})
    shutil.copy(root / "train" / "b" / "b00.png", root / "train" / "b" / "again.png")
    found = failed(validate(tmp_path))
    assert list(found) == ["no duplicate images within a split and class"]
    assert "again.png" in found["no duplicate images within a split and class"]
    assert validate(tmp_path, **{"data.expect.allow_duplicates": True}).passed


# --- masks ------------------------------------------------------------------------------------------------


def test_mask_rules_each_name_their_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    blob = np.zeros((16, 16), np.uint8)
    blob[4:10, 4:10] = 255
    for i in range(8):
        noise_png(root / "images" / f"ok{i}.png", i)
        mask_png(root / "masks" / f"ok{i}.png", blob)
    grey = blob.copy()
    grey[5, 5] = 155  # one antialiased pixel: not binary
    for i, (name, mask) in enumerate({"grey.png": grey, "small.png": blob[:8], "empty.png": blob * 0}.items()):
        noise_png(root / "images" / name, 100 + i)
        mask_png(root / "masks" / name, mask)
    noise_png(root / "images" / "nomask.png", 200)
    found = failed(validate(tmp_path, **{"data.layout": "image_mask"}))
    assert set(found) == {"every image has a mask", "mask size equals image size", "masks binary",
                          "max share of empty masks"}  # fmt: skip
    missing = f"{root / 'images' / 'nomask.png'}: no mask {root / 'masks' / 'nomask.png'}"
    assert missing in found["every image has a mask"]
    assert "image 16x16, mask 16x8" in found["mask size equals image size"]
    assert f"{root / 'images' / 'grey.png'}: mask values 0,155,255" in found["masks binary"]
    assert f"no foreground pixel in {root / 'masks' / 'empty.png'}" in found["max share of empty masks"]
    over = {"data.expect.max_empty_mask_share": 0.1, "data.expect.mask_foreground": [0.2, 1]}
    relaxed = failed(validate(tmp_path, **{"data.layout": "image_mask", **over}))
    assert "max share of empty masks" not in relaxed
    assert "ok0.png: mask values 0,255, foreground 14.06%" in relaxed["foreground fraction of non-empty masks"]


# --- flows ------------------------------------------------------------------------------------------------


def _artifacts(key: str) -> list[str]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return [str(a.data) for a in found]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_retrain_stops_before_training_and_publishes_the_failures(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"a": 8, "b": 8})
    bad = truncate(root / "a" / "a05.png")
    state = retrain("demo", tiny_overrides(tmp_path, **{"name": "broken-data"}), return_state=True)
    assert state.is_failed()
    assert str(bad) in str(state.result(raise_on_failure=False))
    assert not list((tmp_path / "runs").rglob("*.pt"))  # training never started
    assert any(str(bad) in a and "every image readable" in a for a in _artifacts("broken-data-data-validation"))


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_validate_flow_quarantines_and_publishes_the_class_balance(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"a": 8, "b": 8})
    bad = truncate(root / "a" / "a05.png")
    summary = validate_data_flow("demo", tiny_overrides(tmp_path, **{"data.expect.quarantine_unreadable": True}))
    assert summary["quarantined"][0].startswith(str(bad))
    assert sum(summary["counts"]["train"].values()) + sum(summary["counts"]["val"].values()) == 15
    assert any('"class": "a"' in a and '"total": 7' in a for a in _artifacts("demo-class-balance"))


@pytest.mark.slow
def test_cli_exits_nonzero_naming_the_file(tmp_path: Path) -> None:
    root = tree(tmp_path / "data", {"a": 4, "b": 4})
    bad = root / "b" / "notes.png"
    bad.write_text("not an image")
    args = [f"--set={k}={v}" for k, v in tiny_overrides(tmp_path).items() if k.startswith(("data.", "storage."))]
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-m", "flows.validate_data", "--preset", "demo", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"{bad}: cannot decode" in out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["passed"] is False


# --- class balance feeds training -------------------------------------------------------------------------


def test_weighted_sampler_draws_the_minority_as_often_as_the_majority() -> None:
    targets = np.array([0] * 90 + [1] * 10)
    drawn = targets[list(weighted_sampler(targets, 2, seed=0))]
    assert len(drawn) == 100
    draws = np.concatenate([targets[list(weighted_sampler(targets, 2, seed=s))] for s in range(50)])
    assert abs((draws == 1).mean() - 0.5) < 0.03  # 5,000 draws: 3 sigma is ~0.021
    assert list(weighted_sampler(targets, 2, seed=7)) == list(weighted_sampler(targets, 2, seed=7))


def test_class_balance_counts_the_test_split_too() -> None:
    # holding a test split back changes no class's share: 40 of a against 4 of b is 10x, wherever they landed
    samples = pd.DataFrame(
        {"label": ["a"] * 40 + ["b"] * 4, "split": ["train"] * 30 + ["val"] * 10 + ["train", "val", "test", "test"]}
    )
    table = class_table(samples, ["a", "b"]).set_index("label")
    assert table.loc["b", ["train", "val", "test", "count"]].tolist() == [1, 1, 2, 4]
    assert table.loc["b", "imbalance"] == 10
