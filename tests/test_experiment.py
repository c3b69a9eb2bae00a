import json

import pytest

from flows.experiment import experiment
from ml.evaluation.stats import mean_ci
from ml.training.checkpoint import load_checkpoint
from tests.conftest import tiny_overrides


def test_mean_ci_matches_the_t_interval():
    s = mean_ci([0.5, 0.6, 0.7])
    # t(0.975, 2) = 4.303; std = 0.1; half = 4.303 * 0.1 / sqrt(3)
    assert s["mean"] == pytest.approx(0.6) and s["ci_half"] == pytest.approx(0.24843, abs=1e-4)
    assert mean_ci([0.5])["ci_half"] == 0.0
    wide = mean_ci([0.9, 0.95], bounds=(0.0, 1.0))  # two seeds: t(0.975, 1) = 12.7, the interval passes 1
    assert wide["ci_high"] == 1.0 and wide["ci_low"] == pytest.approx(0.925 - wide["ci_half"])


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_experiment_runs_seeds_and_the_augmentation_ablation(tmp_path):
    result = experiment("demo", seeds=2, overrides=tiny_overrides(tmp_path, **{"train.epochs": 1}), ablate=["augment"])
    assert [(r["variant"], r["seed"]) for r in result["runs"]] == [
        ("baseline", 0),
        ("baseline", 1),
        ("no-augment", 0),
        ("no-augment", 1),
    ]
    acc = {r["variant"]: r for r in result["summary"] if r["metric"] == "accuracy"}
    assert set(acc) == {"baseline", "no-augment"} and all(r["n"] == 2 for r in acc.values())


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_every_run_trains_the_epochs_the_budget_gave_the_first(tmp_path):
    over = tiny_overrides(tmp_path, **{"train.epochs": 3, "train.time_budget_min": 1e-4})  # spent in epoch 1
    result = experiment("demo", seeds=2, overrides=over)
    assert [r["epochs"] for r in result["runs"]] == [1, 1]
    (second,) = (tmp_path / "runs" / "demo" / "experiments").glob("baseline-seed1-*/last.pt")
    train = json.loads(load_checkpoint(second, "cpu")["config"])["train"]
    assert (train["epochs"], train["time_budget_min"]) == (1, None)  # pinned, not cut by its own budget
    assert "epochs" not in {r["metric"] for r in result["summary"]}
