"""flows.tune on the shrunk demo preset: trials run, a bad learning rate is pruned, the best is reported, and a
second call continues the study from the store."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend, JournalStorage

from flows.tune import tune
from ml.config.run import load_config
from ml.registry.storage import open_store
from ml.tuning.study import open_study, save_study, study_location
from tests.conftest import tiny_overrides
from tests.s3_servers import aws_env, moto_server  # noqa: F401 (fixtures of store_uri's s3 case)

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


def test_two_calls_on_other_machines_continue_one_study_in_the_store(tmp_path: Path, store_uri: str) -> None:
    """The journal at <storage.uri>/tune/<study>.journal: a call on another machine (its own workdir) finds the
    trials an earlier one saved there and adds to them, on a file store and on a real S3 server (moto)."""

    def call(machine: str, trials: int) -> optuna.Study:
        over = {"storage.uri": store_uri, "storage.workdir": str(tmp_path / machine), "tune.params": SPACE}
        cfg = load_config("demo", over)
        study = open_study(cfg)
        study.optimize(lambda trial: trial.suggest_float("train.lr", 1e-7, 0.002, log=True), n_trials=trials)
        save_study(cfg)
        return study

    assert len(call("a", 2).trials) == 2
    assert len(call("b", 1).trials) == 3  # machine b downloaded a's two trials and added one
    cfg = load_config("demo", {"storage.uri": store_uri, "storage.workdir": str(tmp_path / "c")})
    assert study_location(cfg) == open_store(store_uri).url("tune/demo.journal")
    assert open_store(store_uri).exists("tune/demo.journal") and len(open_study(cfg).trials) == 3


def test_a_searched_key_is_set_from_the_command_line_by_its_dotted_path() -> None:
    cfg = load_config("demo", ["tune.params.train.lr={low: 1.0e-4, high: 1.0e-2, log: true}",
                               "tune.params.data.image_size={choices: [32, 48]}"])  # fmt: skip
    params = cfg.tune.params
    assert params["train.lr"].low == 1.0e-4 and params["train.lr"].log  # replaced the preset's 3e-4..1e-2
    assert params["data.image_size"].choices == [32, 48] and "train.weight_decay" in params  # added; others kept
    assert list(params).count("train.lr") == 1 and "train" not in params
