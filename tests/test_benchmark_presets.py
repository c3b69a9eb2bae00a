"""benchmarks/presets.py's results table: validation and test metrics in columns of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.presets import POOL_BUDGET, markdown, run_preset
from tests.conftest import tiny_overrides

ROW = {
    "preset": "doodle",
    "model": "vf_cnn_small",
    "metrics": {"accuracy": 0.91},
    "test_metrics": {"accuracy": 0.89},
    "gate": "passed",
    "epochs": 3,
    "train_s": 60.0,
    "train_images_per_s": 500.0,
    "onnx_mb": 0.1,
    "latency_ms": 0.2,
    "machine": "cpu",
}


def test_table_has_validation_and_test_columns():
    no_test = {**ROW, "preset": "demo", "test_metrics": {}}
    head, _, with_test, without = markdown([ROW, no_test], "CPU budget").splitlines()[4:8]
    columns = [c.strip() for c in head.strip("|").split("|")]
    assert columns[2:4] == ["validation", "test (gated when present)"]
    cells = [c.strip() for c in with_test.strip("|").split("|")]
    assert len(cells) == len(columns) and cells[2:4] == ["accuracy 0.9100", "accuracy 0.8900"]
    assert [c.strip() for c in without.strip("|").split("|")][2:4] == ["accuracy 0.9100", ""]


@pytest.mark.usefixtures("prefect_harness")
def test_a_preset_runs_end_to_end_and_is_then_used(tmp_path: Path):
    """The whole row as the real presets produce it (the run folder is gone after the publish), on the demo."""
    overrides = tiny_overrides(tmp_path, **{"data.test_fraction": 0.2})
    row = run_preset("demo", overrides, overrides.pop("storage.uri"))
    assert row["promoted"] and row["test_images"] > 0 and row["test_metrics"]
    assert row["scored"] == row["val_images"] and 0 < row["selected"] <= POOL_BUDGET
