"""The test split (data.test_fraction): scored beside validation, judged by the gate, shown in the report."""

from __future__ import annotations

import pytest

from ml.config.evaluation import GateConfig
from ml.config.run import load_config
from ml.data.prepare import prepare_dataset
from ml.evaluation.classifier import evaluate_classifier
from ml.evaluation.gate import Candidate, ChampionEval, evaluate_gate
from ml.registry.report import headline_rows
from ml.training.classifier import train_classifier
from tests.conftest import tiny_overrides


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
