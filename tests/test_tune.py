"""flows.tune on the shrunk demo preset: trials run, a bad learning rate is pruned, the best is reported, and a
second call continues the study from the store."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend, JournalStorage

from flows.tune import tune
from tests.conftest import tiny_overrides

# the preset's lr (0.002) is the first trial; the others draw from far below it and fall behind at epoch 1
SPACE = {"train.lr": {"low": 1.0e-7, "high": 0.002, "log": True}}


@pytest.mark.usefixtures("prefect_harness")
def test_tune_prunes_reports_the_best_and_continues_the_study(tmp_path: Path) -> None:
    overrides = tiny_overrides(
        tmp_path,
        **{"tune.params": SPACE, "tune.pruner": {"startup_trials": 1, "min_epochs": 1}, "tune.startup_trials": 10},
    )
    first = tune("demo", trials=3, budget_min=1, overrides=overrides)
    assert first["trials"] == 3 and first["pruned"] >= 1, first
    assert first["best"]["number"] == 0  # the preset's own rate beats rates 10-10^4 times smaller
    assert yaml.safe_load(first["snippet"]) == {"train": {"lr": 0.002}}
    journal = JournalStorage(JournalFileBackend(str(tmp_path / "store" / "tune" / "demo.journal")))
    done = [t for t in optuna.load_study(study_name="demo", storage=journal).trials if t.value is not None]
    assert first["best"]["value"] == max(t.value for t in done if t.state.name == "COMPLETE")

    second = tune("demo", trials=1, budget_min=1, overrides=overrides)
    assert second["trials"] == 4
