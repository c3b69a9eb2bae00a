"""benchmarks/presets.py's results table: validation and test metrics in columns of their own."""

from __future__ import annotations

from benchmarks.presets import markdown

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
