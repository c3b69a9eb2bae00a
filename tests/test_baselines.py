"""benchmarks/baselines.py: the preset and the plain baseline train on one split and both are scored on test."""

from __future__ import annotations

import json

from benchmarks.baselines import run
from tests.conftest import tiny_overrides, tiny_seg_overrides


def test_both_sides_train_on_the_preset_split_and_report_on_test(tmp_path):
    overrides = tiny_overrides(tmp_path, **{"data.test_fraction": 0.2, "data.synthetic.per_class": 20})
    rows = run(["demo"], 0.02, overrides, tmp_path / "out" / "baselines")
    (row,) = rows
    assert row["test_images"] > 0 and row["train_images"] > row["test_images"]
    for side in ("preset", "baseline"):
        assert row[side]["epochs"] >= 1 and row[side]["images_per_s"] > 0
        assert 0.0 <= row[side]["accuracy"] <= 1.0 and 0.0 <= row[side]["macro_f1"] <= 1.0
    saved = json.loads((tmp_path / "out" / "baselines.json").read_text())
    assert saved["rows"] == rows and "CPU cores" in saved["machine"]
    table = (tmp_path / "out" / "baselines.md").read_text()
    assert "| demo | 0.02 |" in table and "| baseline |" in table and "| preset |" in table


def test_a_segmenter_preset_meets_the_plain_unet_on_its_test_pages(tmp_path):
    overrides = tiny_seg_overrides(tmp_path, **{"data.test_fraction": 0.25, "data.synthetic.per_class": 10})
    (row,) = run(["demo-seg"], 0.02, overrides, tmp_path / "out" / "baselines")
    assert row["kind"] == "segment" and row["test_images"] >= 2 and row["train_images"] > row["test_images"]
    for side in ("preset", "baseline"):
        assert row[side]["epochs"] > 0 and row[side]["images_per_s"] > 0
        assert 0.0 <= row[side]["f1"] <= 1.0 and 0.0 <= row[side]["iou"] <= row[side]["f1"]
    table = (tmp_path / "out" / "baselines.md").read_text()
    assert "## Segmenters" in table and "| demo-seg | 0.02 |" in table and "## Classifiers" not in table
