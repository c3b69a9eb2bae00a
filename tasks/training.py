"""Training task: resumes from the run's last checkpoint when Prefect retries it."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from ml.classifier import train_classifier
from ml.config import RunConfig
from ml.data.prepare import PreparedData
from ml.train import TrainResult


@task(name="train", cache_policy=NO_CACHE)
def train_model(cfg: RunConfig, prepared: PreparedData, run_dir: Path) -> TrainResult:
    return train_classifier(cfg, prepared, run_dir)
