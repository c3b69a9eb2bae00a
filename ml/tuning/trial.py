"""One trial of the search, and what the study found.

    record = run_trial(study, preset, overrides, root, train)   # train(cfg, run_dir, on_epoch) -> TrainResult

A trial's value is its best validation epoch by train.monitor (what the checkpoint selection picks); the test
split is never read. Each epoch's validation metric is reported, so the pruner can stop a trial that falls behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from ml.config.run import RunConfig, apply_overrides, load_config
from ml.config.tune import Param
from ml.training.loop import TrainResult
from ml.training.step import OnEpoch

Train = Callable[[RunConfig, Path, OnEpoch], TrainResult]


@dataclass
class TrialRecord:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING (another worker's)
    value: float | None
    params: dict[str, Any]
    epochs: int  # validation epochs reported

    @classmethod
    def of(cls, t: FrozenTrial) -> TrialRecord:
        return cls(t.number, t.state.name, t.value, t.params, len(t.intermediate_values))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def suggest(trial: optuna.Trial, params: dict[str, Param]) -> dict[str, Any]:
    """The trial's value of each searched key (Optuna records it under the dotted key)."""
    out: dict[str, Any] = {}
    for key, p in params.items():
        if p.choices is not None:
            out[key] = trial.suggest_categorical(key, p.choices)
        elif p.integer:
            out[key] = trial.suggest_int(key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            out[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return out


def preset_values(cfg: RunConfig) -> dict[str, Any]:
    """The config's own value of each searched key the space can draw: a new study's first trial, so the search
    starts from the recipe it has to beat."""
    values = {}
    for key, p in cfg.tune.params.items():
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if p.holds(node):
            values[key] = node
    return values


def check_space(preset: str, overrides: dict[str, Any]) -> None:
    """Load the preset with each bound and choice of tune.params, so a value the config refuses (an unknown
    model.name, a rate of 0) fails before the first trial, with pydantic's message."""
    for key, p in load_config(preset, overrides).tune.params.items():
        for value in p.choices if p.choices is not None else (p.low, p.high):
            load_config(preset, {**overrides, key: value})


def _reporter(trial: optuna.Trial, monitor: str) -> OnEpoch:
    def report(row: dict[str, float]) -> None:
        value = row[f"val_{monitor}"]
        trial.report(value, int(row["epoch"]))
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {row['epoch']}: val_{monitor} {value:.4f} behind the median there")

    return report


def run_trial(study: optuna.Study, preset: str, overrides: dict[str, Any], root: Path, train: Train) -> TrialRecord:
    """Draw the next trial, train it in root/trial-<n> from scratch and tell the study; its folder goes afterwards
    (the study is the record). A failure is told as FAIL and raised."""
    trial = study.ask()
    run_dir = root / f"trial-{trial.number:04d}"
    try:
        cfg = load_config(preset, overrides)
        cfg = load_config(preset, {**overrides, **suggest(trial, cfg.tune.params), "train.resume": False})
        result = train(cfg, run_dir, _reporter(trial, cfg.train.monitor))
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        study.tell(trial, result.best_metric)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return TrialRecord.of(next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number))


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Every trial of the study (every worker's, every call's) as a table row."""
    return [TrialRecord.of(t).to_dict() for t in study.get_trials(deepcopy=False)]


def best_snippet(study: optuna.Study) -> str:
    """The best complete trial's overrides as the nested YAML a preset is written in (floats to 4 digits)."""
    params = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in study.best_trial.params.items()}
    return yaml.safe_dump(apply_overrides({}, params), sort_keys=False)
