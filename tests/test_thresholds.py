import numpy as np
import pytest

from ml.core.metrics import decided_metrics
from ml.core.thresholds import choose_threshold, decide
from ml.monitoring.scoring import prediction_columns

Y = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1, 1])
P = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9])


def test_f1_optimal_threshold():
    best = choose_threshold(Y, P, "f1")
    # at 0.35 every positive is caught with one false positive (0.4): P=5/6, R=1, F1=10/11
    assert best["threshold"] == 0.35
    assert best["f1"] == pytest.approx(10 / 11)


def test_target_precision_threshold():
    best = choose_threshold(Y, P, "precision", target_precision=1.0)
    assert best["threshold"] == 0.6 and best["precision"] == 1.0 and best["recall"] == 0.8
    assert best["objective_met"] == 1.0


def test_unreachable_precision_is_reported_not_hidden():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.9, 0.8, 0.8])  # no threshold separates them
    assert choose_threshold(y, p, "precision", target_precision=0.99)["objective_met"] == 0.0


def test_decided_metrics_predict_at_the_chosen_threshold_and_keep_the_argmax_figures():
    probs = np.column_stack([1 - P, P])
    metrics = decided_metrics(Y, probs, ["rest", "fish"], "f1")
    # argmax (0.5) misses the positive at 0.35; the F1-optimal 0.35 catches it at the price of 0.4
    assert metrics["decision"]["threshold"] == 0.35 and metrics["decision"]["positive"] == "fish"
    assert metrics["accuracy"] == 0.9 and metrics["decision"]["argmax_accuracy"] == 0.9
    assert metrics["per_class"]["fish"]["recall"] == 1.0
    assert list(decide(probs, 0.35)) == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    cols = prediction_columns(probs, ["rest", "fish"], 0.35)
    assert list(cols["pred"][4:6]) == ["fish", "fish"]  # the argmax would say "rest" for both


def test_confidence_is_measured_from_the_threshold():
    probs = np.column_stack([1 - P, P])
    cols = prediction_columns(probs, ["rest", "fish"], 0.35)
    # P(fish) = 0.35 sits on the threshold: the least sure image, though 0.05 (sure "rest") is farther from 0.5
    assert int(np.argmin(cols["confidence"])) == 4 and cols["confidence"][4] == pytest.approx(0.5)
    assert cols["entropy"][4] == pytest.approx(np.log(2)) and cols["margin"][4] == pytest.approx(0, abs=1e-9)
    assert cols["confidence"][5] > 0.5 and cols["pred"][5] == "fish"  # 0.4: past the threshold, a little sure
    assert np.all(np.diff(cols["confidence"][4:]) > 0)  # the farther above it, the surer
    assert np.array_equal(prediction_columns(probs, ["rest", "fish"])["confidence"], np.maximum(P, 1 - P))


def test_a_threshold_on_a_multiclass_model_is_refused():
    with pytest.raises(ValueError, match="needs a binary model"):
        decided_metrics(np.array([0, 1, 2]), np.eye(3), ["a", "b", "c"], "f1")
