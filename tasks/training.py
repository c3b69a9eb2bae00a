"""Training task: on CUDA it holds `gpu` slots and GPUs of the machine that no other run holds (tasks.gpus); a
retry resumes from the run's last checkpoint."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from ml.config.run import RunConfig
from ml.data.prepare import PreparedData
from ml.training.loop import TrainResult
from ml.training.step import train_step
from tasks.gpus import on_gpus


@task(name="train", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=30)
def train_model(cfg: RunConfig, prepared: PreparedData, run_dir: Path) -> TrainResult:
    """A retry reuses run_dir, so it continues after the last finished epoch (train.resume) instead of epoch 1."""
    with on_gpus(cfg, cfg.train.devices) as placed:
        return train_step(placed, prepared, run_dir)
