"""The test split (data.test_fraction): scored beside validation, judged by the gate, shown in the report."""

from __future__ import annotations

import pytest

from flows.retrain import retrain
from ml.config.evaluation import GateConfig
from ml.config.run import load_config
from ml.data.prepare import prepare_dataset
from ml.evaluation.classifier import evaluate_classifier
from ml.evaluation.gate import Candidate, ChampionEval, evaluate_gate
from ml.evaluation.segmenter import evaluate_segmenter
from ml.registry.report import headline_rows
from ml.registry.storage import open_store
from ml.registry.versions import Registry
from ml.training.classifier import train_classifier
from ml.training.segmenter import train_segmenter
from tests.conftest import tiny_overrides, tiny_seg_overrides


@pytest.mark.slow
def test_the_best_checkpoint_is_scored_on_test_and_the_gate_judges_it(tmp_path):
    cfg = load_config("demo", tiny_overrides(tmp_path, **{"data.test_fraction": 0.3, "train.epochs": 1}))
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    trained = train_classifier(cfg, prepared, tmp_path / "run")
    metrics = evaluate_classifier(cfg, prepared, trained, tmp_path / "run").metrics
    assert metrics["n"] == sum(prepared.counts["val"].values())
    assert metrics["test"]["n"] == sum(prepared.counts["test"].values())
    rules = GateConfig(min={"accuracy": metrics["test"]["accuracy"]}, champion={"enabled": False})
    report = evaluate_gate(Candidate(metrics), ChampionEval(None), rules)
    assert report.passed and [(r.split, r.measured) for r in report.rules] == [("test", metrics["test"]["accuracy"])]
    rows = headline_rows(metrics, "")
    assert [r["split"] for r in rows] == ["validation", "test"] and rows[1][
        "accuracy"
    ] == f"{report.rules[0].measured:.4f}"


@pytest.mark.slow
def test_retrain_with_a_test_split_gates_on_test_and_reports_both(tmp_path):
    over = tiny_overrides(tmp_path, **{"data.test_fraction": 0.3, "train.epochs": 1, "gate.min": {"accuracy": 0.0}})
    summary = retrain("demo", over)
    rows = {r["rule"]: r["split"] for r in summary["gate"]["rules"]}
    assert rows["accuracy >= 0"] == rows["macro_f1 vs production"] == "test" and summary["gate"]["split"] == "test"
    registry = Registry(open_store(over["storage.uri"]))
    report = registry.fetch("demo", summary["version"], "report.md", tmp_path / "report.md").read_text()
    assert "| validation |" in report and "| test |" in report and "## Per class / per image (test)" in report


@pytest.mark.slow
def test_a_segmenter_is_scored_on_its_test_pages(tmp_path):
    cfg = load_config("demo-seg", tiny_seg_overrides(tmp_path, **{"data.test_fraction": 0.3}))
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    trained = train_segmenter(cfg, prepared, tmp_path / "run")
    metrics = evaluate_segmenter(cfg, prepared, trained, tmp_path / "run").metrics
    assert metrics["test"]["n"] == sum(prepared.counts["test"].values()) > 0
    assert len(metrics["test"]["per_image"]) == metrics["test"]["n"] and "f1" in metrics["test"]
