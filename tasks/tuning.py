"""Tuning tasks: the study opened from the store, one trial each, the study saved back, its report published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from ml.config.run import RunConfig
from ml.data.prepare import PreparedData
from ml.training.loop import TrainResult
from ml.training.step import OnEpoch, train_step
from ml.tuning.study import open_study, save_study, study_location, study_name
from ml.tuning.trial import TrialRecord, best_snippet, preset_values, run_trial, trial_rows
from tasks.gpus import training_slots
from tasks.registry import STORE_RETRIES


@task(name="open-study", cache_policy=NO_CACHE, **STORE_RETRIES)
def open_tuning_study(cfg: RunConfig) -> optuna.Study:
    """The study, continued from the store if a call made it; a new one first tries the preset's own values."""
    return open_study(cfg, preset_values(cfg))


@task(name="trial", cache_policy=NO_CACHE)
def tune_trial(
    study: optuna.Study, preset: str, overrides: dict[str, Any], prepared: PreparedData, root: Path
) -> TrialRecord:
    """One trial, trained under this machine's training slot (trials of several workers queue as trainings do)."""

    def train(cfg: RunConfig, run_dir: Path, on_epoch: OnEpoch) -> TrainResult:
        with training_slots(cfg) as placed:
            return train_step(placed, prepared, run_dir, on_epoch)

    record = run_trial(study, preset, overrides, root, train)
    print(f"trial {record.number}: {record.state} value={record.value} params={record.params}")
    return record


@task(name="save-study", cache_policy=NO_CACHE, **STORE_RETRIES)
def save_tuning_study(cfg: RunConfig) -> None:
    save_study(cfg)


@task(name="report-study", cache_policy=NO_CACHE)
def report_study(cfg: RunConfig, study: optuna.Study) -> dict[str, Any]:
    """`<model>-tune-trials` (every trial: number, state, value, params) and `<model>-tune-best` (the YAML to paste
    into the preset); returns the summary."""
    rows = trial_rows(study)
    create_table_artifact(key=f"{cfg.name}-tune-trials", table=rows, description=f"study {study_name(cfg)}")
    best = study.best_trial
    snippet = best_snippet(study)
    create_markdown_artifact(
        key=f"{cfg.name}-tune-best",
        markdown=f"Trial {best.number}, validation {cfg.train.monitor} {best.value:.4f}\n\n```yaml\n{snippet}```\n",
        description=f"study {study_name(cfg)}: best overrides for the preset",
    )
    states = [r["state"] for r in rows]
    return {
        "study": study_name(cfg),
        "storage": study_location(cfg),
        "trials": len(rows),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "best": {"number": best.number, "value": best.value, "params": best.params},
        "snippet": snippet,
    }
