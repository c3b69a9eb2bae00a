"""Gate rules as pure functions on fabricated numbers; ONNX scoring and champion comparison on real onnxruntime."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from ml.config.evaluation import ChampionConfig, GateConfig
from ml.config.run import load_config
from ml.core.metrics import classification_metrics
from ml.data.prepare import prepare_dataset, sample_digests
from ml.evaluation.classifier import applied_on_split
from ml.evaluation.gate import Candidate, ChampionEval, champion_rule, evaluate_gate, regressions
from ml.evaluation.stats import paired_bootstrap, resampled_metric
from ml.export.onnx import IncompatibleModel, export_onnx
from ml.export.onnx_eval import evaluate_on_split, latency_on_split
from ml.monitoring.alerts import GATE_FAILED, run_alerts
from ml.registry.champion import challenge
from ml.registry.report import gate_rows
from ml.registry.storage import open_store
from ml.registry.versions import Registry
from tests.conftest import tiny_overrides

CLASSES = ["circle", "cross", "square", "triangle"]


def _metrics(accuracy=0.9, macro_f1=0.88, recalls=(0.9, 0.9, 0.9, 0.9), shares=(0.25, 0.25, 0.25, 0.25)) -> dict:
    return {
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "loss": 0.3,
        "auroc": 0.97,
        "per_class": {c: {"precision": 0.9, "recall": r, "f1": 0.9} for c, r in zip(CLASSES, recalls, strict=True)},
        "prediction_share": dict(zip(CLASSES, shares, strict=True)),
    }


NO_PRODUCTION = ChampionEval(None, {"macro_f1": 0.88})


def _rows(report) -> dict[str, bool]:
    return {r.rule: r.passed for r in report.rules}


def test_absolute_rules_and_a_missing_metric_fails():
    rules = GateConfig(min={"accuracy": 0.9, "auroc": 0.99}, max={"loss": 0.5}, champion={"enabled": False})
    report = evaluate_gate(Candidate({**_metrics(), "auroc": None}), NO_PRODUCTION, rules)
    assert _rows(report) == {"accuracy >= 0.9": True, "auroc >= 0.99": False, "loss <= 0.5": True}
    assert report.failed[0].detail == "not measured" and report.verdict == "failed (1 of 3 rules failed)"
    assert not report.passed


def test_per_class_minimum_is_one_row_per_class():
    rules = GateConfig(per_class_min={"recall": 0.85}, champion={"enabled": False})
    report = evaluate_gate(Candidate(_metrics(recalls=(0.9, 0.5, 0.95, 0.85))), NO_PRODUCTION, rules)
    assert _rows(report) == {
        "recall[circle] >= 0.85": True,
        "recall[cross] >= 0.85": False,
        "recall[square] >= 0.85": True,
        "recall[triangle] >= 0.85": True,
    }


def test_bias_rule_catches_a_model_that_predicts_one_class():
    rules = GateConfig(max_class_share=0.4, champion={"enabled": False})
    balanced = evaluate_gate(Candidate(_metrics()), NO_PRODUCTION, rules)
    lopsided = evaluate_gate(Candidate(_metrics(shares=(0.1, 0.85, 0.05, 0.0))), NO_PRODUCTION, rules)
    assert balanced.passed and not lopsided.passed
    row = lopsided.rules[0]
    assert (row.measured, row.threshold, row.detail) == (0.85, 0.4, "most predicted: cross")


def test_cost_rules_on_size_and_latency():
    rules = GateConfig(max_model_mb=5, max_latency_ms=2, champion={"enabled": False})
    assert evaluate_gate(Candidate(_metrics(), model_mb=4.9, latency_ms=1.5), NO_PRODUCTION, rules).passed
    report = evaluate_gate(Candidate(_metrics(), model_mb=19.7, latency_ms=None), NO_PRODUCTION, rules)
    assert _rows(report) == {"onnx size MB <= 5": False, "latency ms/image <= 2": False}
    assert report.rules[1].detail.startswith("median per image")


@pytest.mark.parametrize(
    ("production", "candidate", "rules", "passed", "threshold"),
    [
        (0.80, 0.80, {}, True, 0.79),  # equal
        (0.80, 0.795, {}, True, 0.79),  # worse, within the default tolerance 0.01
        (0.80, 0.78, {}, False, 0.79),  # worse beyond it
        (0.80, 0.78, {"tolerance": 0.05}, True, 0.75),
        (0.80, 0.81, {"min_delta": 0.02}, False, 0.82),  # better, but not by enough
        (0.80, 0.83, {"min_delta": 0.02}, True, 0.82),
    ],
)
def test_champion_rule_compares_with_production(production, candidate, rules, passed, threshold):
    champ = ChampionEval("v1", {"macro_f1": candidate}, {"macro_f1": production}, n_images=80)
    row = champion_rule(champ, ChampionConfig(**rules))
    assert row.passed is passed and row.threshold == pytest.approx(threshold) and row.measured == candidate
    assert "production v1: 0.8000" in row.detail and "80 images" in row.detail


def test_champion_rule_on_loss_wants_lower():
    champ = ChampionEval("v1", {"loss": 0.52}, {"loss": 0.50}, n_images=80)
    assert not champion_rule(champ, ChampionConfig(metric="loss")).passed
    assert champion_rule(champ, ChampionConfig(metric="loss", tolerance=0.05)).rule == "loss vs production <= 0.55"


def test_champion_rule_refuses_to_judge_on_too_few_unseen_images():
    seen = "30 trained on by production v1, 0 by the candidate"
    champ = ChampionEval("v1", {"macro_f1": 0.9}, {"macro_f1": 0.5}, n_images=19, n_excluded=30, excluded=seen)
    row = champion_rule(champ, ChampionConfig(min_images=20))
    assert not row.passed and row.threshold is None
    assert row.detail == f"refusing to judge production v1: 19 images, 30 excluded ({seen}), fewer than " + (
        "gate.champion.min_images=20"
    )
    assert champion_rule(champ, ChampionConfig(min_images=19)).passed


@pytest.mark.parametrize(
    ("interval", "says"),
    [
        ((-0.02, 0.045), "candidate - production +0.0125, 95% CI [-0.0200, +0.0450]: no significant difference"),
        ((0.004, 0.03), "candidate - production +0.0125, 95% CI [+0.0040, +0.0300]; 80 images"),
        (None, "candidate - production +0.0125, no interval"),
    ],
)
def test_champion_row_reads_the_difference_against_its_bootstrap_interval(interval, says):
    champ = ChampionEval("v1", {"macro_f1": 0.8125}, {"macro_f1": 0.80}, n_images=80, interval=interval)
    row = champion_rule(champ, ChampionConfig())
    assert row.passed and says in row.detail  # the verdict is the point difference's; the interval informs it


def test_paired_bootstrap_of_a_difference():
    rows = [{"target": t, "pred": p, "loss": 0.1 * t} for t, p in [(0, 0), (1, 1), (2, 1), (3, 3), (0, 2)] * 8]
    targets, preds = (np.array([r[k] for r in rows]) for k in ("target", "pred"))
    probs = np.eye(4)[preds]  # argmax = pred
    whole = np.arange(len(rows))[None]
    for metric in ("accuracy", "macro_f1", "macro_precision", "macro_recall", "loss"):
        stat = resampled_metric(rows, metric, 4)
        expected = np.mean([r["loss"] for r in rows]) if metric == "loss" else None
        if metric != "loss":
            expected = classification_metrics(targets, probs, CLASSES)[metric]
        assert stat(whole)[0] == pytest.approx(expected)  # the identity resample is the metric itself
    assert resampled_metric(rows, "auroc", 4) is None
    f1 = resampled_metric(rows, "macro_f1", 4)
    assert paired_bootstrap(f1, f1, len(rows), 200, 0.95) == (0.0, 0.0)  # a model against itself: no difference
    perfect = resampled_metric([{**r, "pred": r["target"]} for r in rows], "macro_f1", 4)
    low, high = paired_bootstrap(perfect, f1, len(rows), 1000, 0.95)
    assert 0 < low < high <= 1 and (low, high) == paired_bootstrap(perfect, f1, len(rows), 1000, 0.95)  # seeded


def test_champion_rule_without_production_passes_and_says_so():
    row = champion_rule(NO_PRODUCTION, ChampionConfig())
    assert row.passed and row.threshold is None and row.detail == "no production model yet: nothing to beat"


def test_champion_rule_fails_with_the_reason_when_production_is_not_comparable():
    champ = ChampionEval("v1", {"macro_f1": 0.9}, error="it predicts classes ['a', 'b'], this split has ['a', 'c']")
    row = champion_rule(champ, ChampionConfig())
    assert not row.passed and row.detail.startswith("production v1 not comparable: it predicts classes ['a', 'b']")
    undefined = ChampionEval("v1", {"auroc": None}, {"auroc": 0.9}, n_images=80)
    undefined = champion_rule(undefined, ChampionConfig(metric="auroc"))
    assert not undefined.passed and "undefined on this split" in undefined.detail


def test_gate_rows_are_what_the_table_artifact_shows():
    rules = GateConfig(min={"accuracy": 0.95}, max_class_share=0.4)
    report = evaluate_gate(Candidate(_metrics()), NO_PRODUCTION, rules)
    assert gate_rows(report) == [
        {
            "rule": "accuracy >= 0.95",
            "split": "validation",
            "threshold": "0.95",
            "measured": "0.9000",
            "result": "FAIL",
            "detail": "",
        },
        {
            "rule": "max class share of predictions <= 0.4",
            "split": "validation",
            "threshold": "0.4",
            "measured": "0.2500",
            "result": "pass",
            "detail": "most predicted: circle",
        },
        {
            "rule": "macro_f1 vs production",
            "split": "validation",
            "threshold": "n/a",
            "measured": "0.8800",
            "result": "pass",
            "detail": "no production model yet: nothing to beat",
        },
    ]


def test_with_a_test_split_the_metric_rules_judge_test_and_say_so():
    val_passes, test_fails = _metrics(accuracy=0.96), _metrics(accuracy=0.9, recalls=(0.9, 0.5, 0.9, 0.9))
    rules = GateConfig(min={"accuracy": 0.95}, per_class_min={"recall": 0.8}, max_latency_ms=5)
    champion = ChampionEval(None, {"macro_f1": 0.88}, split="test")
    report = evaluate_gate(Candidate(val_passes | {"test": test_fails}, latency_ms=1), champion, rules)
    assert not _rows(report)["accuracy >= 0.95"] and not _rows(report)["recall[cross] >= 0.8"]
    assert report.split == "test" and report.metrics["accuracy"] == 0.9
    splits = {r.rule: r.split for r in report.rules}
    assert splits["accuracy >= 0.95"] == splits["macro_f1 vs production"] == "test"
    assert splits["latency ms/image <= 5"] == ""  # cost rules judge no split
    assert evaluate_gate(Candidate(val_passes, latency_ms=1), NO_PRODUCTION, rules).passed  # no test: validation


def test_regressions_beyond_tolerance_only():
    champ = ChampionEval(
        "v1",
        {"accuracy": 0.80, "macro_f1": 0.795, "auroc": None, "loss": 9.0},
        {"accuracy": 0.90, "macro_f1": 0.80, "auroc": 0.9, "loss": 0.1},
    )
    assert regressions(champ, ChampionConfig(tolerance=0.01)) == {"accuracy": (0.90, 0.80)}
    assert regressions(ChampionEval(None, {"accuracy": 0.1}), ChampionConfig(tolerance=0.0)) == {}


@pytest.mark.parametrize(
    ("interval", "on_noise", "held"),
    [
        ((-0.06, 0.02), "hold", True),  # 0.03 worse, but the interval holds zero: production kept, no failure
        ((-0.06, 0.02), "fail", False),
        ((-0.05, -0.01), "hold", False),  # significantly worse: a failed gate
        (None, "hold", False),  # no interval: the point difference decides
    ],
)
def test_a_champion_miss_within_noise_holds_production_without_failing_or_alerting(interval, on_noise, held):
    champ = ChampionEval(
        "v1", {"macro_f1": 0.77, "accuracy": 0.80}, {"macro_f1": 0.80, "accuracy": 0.85}, n_images=40, interval=interval
    )
    rules = GateConfig(champion=ChampionConfig(on_noise=on_noise))
    report = evaluate_gate(Candidate({"macro_f1": 0.77, "accuracy": 0.80}), champ, rules)
    assert not report.passed and report.held is held and report.to_dict()["held"] is held
    assert report.verdict.startswith("held" if held else "failed")
    alert = run_alerts("demo", "v2", report, champ, rules.champion, None)
    assert (alert is None) is held  # a held night sends nothing; a failed gate names the rule and the regressions
    if not held:
        assert alert.event == GATE_FAILED and "accuracy regressed: 0.8500 -> 0.8000" in alert.text()
    with_other_failure = GateConfig(min={"accuracy": 0.9}, champion=ChampionConfig(on_noise=on_noise))
    assert not evaluate_gate(Candidate({"macro_f1": 0.77, "accuracy": 0.80}), champ, with_other_failure).held


@pytest.mark.parametrize(
    "bad",
    [
        {"per_class_min": {"recal": 0.8}},
        {"champion": {"metric": "f2"}},
        {"max_class_share": 1.5},
        {"champion": {"tolerance": -0.1}},
        {"max_latency_ms": 0},
    ],
)
def test_gate_config_rejects_bad_rules(bad):
    with pytest.raises(ValidationError):
        GateConfig(**bad)


# --- real ONNX files through onnxruntime, on a real prepared split --------------------------------------------


def _onnx(path: Path, channels: int = 3, size: int = 32, classes: int = 4, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, classes))
    return export_onnx(model, torch.rand(1, channels, size, size), path)


@pytest.fixture
def split(tmp_path):
    cfg = load_config("demo", tiny_overrides(tmp_path))
    return cfg, prepare_dataset(cfg.data, tmp_path / "prep")


def _publish(registry: Registry, onnx: Path, classes: list[str]) -> str:
    return registry.publish("demo", {"model.onnx": onnx}, {"classes": classes})


def test_same_model_as_production_scores_identically(split, tmp_path):
    cfg, prepared = split
    onnx = _onnx(tmp_path / "cand.onnx")
    registry = Registry(open_store(cfg.storage.uri))
    production = _publish(registry, onnx, prepared.classes)
    champ = challenge(registry, cfg, prepared, onnx, production, tmp_path)
    assert champ.error is None and champ.n_images == sum(prepared.counts["val"].values())
    assert champ.candidate_metrics == champ.production_metrics  # same split, same code
    row = champion_rule(champ, cfg.gate.champion.model_copy(update={"tolerance": 0}))
    assert row.passed and champ.interval == (0.0, 0.0) and "no significant difference" in row.detail
    # published before training lists: compared on the whole split as before, and the row says so
    assert champ.n_excluded == 0 and f"production {production} records no training.txt: could not exclude" in row.detail
    assert evaluate_on_split(cfg, prepared, onnx)["accuracy"] == champ.candidate_metrics["accuracy"]


def test_validation_images_production_trained_on_are_excluded_by_content(split, tmp_path):
    cfg, prepared = split
    digests = sample_digests(prepared)
    val = digests[digests["split"] == "val"]
    seen = tmp_path / "training.txt"  # production trained on 3 of this run's validation images (renamed copies)
    seen.write_text("\n".join([*digests.loc[digests["split"] == "train", "sha256"], *val["sha256"][:3]]))
    onnx = _onnx(tmp_path / "cand.onnx")
    registry = Registry(open_store(cfg.storage.uri))
    production = registry.publish("demo", {"model.onnx": onnx, "training.txt": seen}, {"classes": prepared.classes})
    champ = challenge(registry, cfg, prepared, onnx, production, tmp_path)
    assert (champ.n_images, champ.n_excluded) == (len(val) - 3, 3)
    assert champ.excluded == f"3 trained on by production {production}, 0 by the candidate"
    row = champion_rule(champ, cfg.gate.champion)
    assert row.passed and f"{len(val) - 3} images, 3 excluded (3 trained on by production" in row.detail
    refused = champion_rule(champ, cfg.gate.champion.model_copy(update={"min_images": len(val) - 2}))
    assert not refused.passed and refused.detail.startswith(f"refusing to judge production {production}")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("classes", "predicts classes ['a', 'b', 'c', 'd'], this split has"),
        ("input", "input 'image' is ['batch', 1, 32, 32], this split's images are N x (3, 32, 32)"),
        ("outputs", "predicts (3,) classes, this split has 4"),
        ("corrupt", "onnxruntime cannot load it"),
    ],
)
def test_incompatible_production_fails_the_rule_with_a_message(split, tmp_path, kind, message):
    cfg, prepared = split
    registry = Registry(open_store(cfg.storage.uri))
    bad = tmp_path / "bad.onnx"
    if kind == "corrupt":
        bad.write_bytes(b"not an onnx file")
    else:
        _onnx(bad, channels=1 if kind == "input" else 3, classes=3 if kind == "outputs" else 4)
    production = _publish(registry, bad, ["a", "b", "c", "d"] if kind == "classes" else prepared.classes)
    champ = challenge(registry, cfg, prepared, _onnx(tmp_path / "cand.onnx"), production, tmp_path)
    assert message in champ.error and champ.production_metrics == {}
    row = champion_rule(champ, ChampionConfig())
    assert not row.passed and f"production {production} not comparable" in row.detail
    if kind != "classes":  # a file that cannot score this split says which file
        with pytest.raises(IncompatibleModel, match="bad.onnx"):
            evaluate_on_split(cfg, prepared, bad)


def test_latency_is_measured_per_image(split, tmp_path):
    cfg, prepared = split
    ms = latency_on_split(cfg, prepared, _onnx(tmp_path / "m.onnx"))
    assert 0 < ms < 1000
    rules = GateConfig(max_latency_ms=1e-6, champion={"enabled": False})
    assert not evaluate_gate(Candidate(_metrics(), latency_ms=ms), NO_PRODUCTION, rules).passed


def test_with_a_test_split_champion_compares_on_test_images(tmp_path):
    cfg = load_config("demo", tiny_overrides(tmp_path, **{"data.test_fraction": 0.3}))
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    assert prepared.judged_side == "test"
    onnx = _onnx(tmp_path / "cand.onnx")
    registry = Registry(open_store(cfg.storage.uri))
    champ = challenge(registry, cfg, prepared, onnx, _publish(registry, onnx, prepared.classes), tmp_path)
    assert champ.split == "test" and champ.n_images == sum(prepared.counts["test"].values())
    assert champ.candidate_metrics["accuracy"] == evaluate_on_split(cfg, prepared, onnx, "test")["accuracy"]


def test_the_test_split_is_scored_at_the_threshold_chosen_on_validation(split):
    _, prepared = split
    two = replace(prepared, classes=["no", "yes"])
    targets, probs = np.array([0, 0, 1, 1]), np.array([[0.6, 0.4], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    on_test = applied_on_split(two, "test", targets, probs, {"decision": {"threshold": 0.6}})
    assert on_test["accuracy"] == 0.75  # at 0.6 one positive is missed; a threshold chosen on these would reach 1.0
    assert applied_on_split(two, "test", targets, probs, {})["accuracy"] == 1.0  # argmax when none was chosen
