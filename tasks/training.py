"""Training task: holds a `gpu` slot while it trains on CUDA; a retry resumes from the run's last checkpoint."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from ml.config import RunConfig
from ml.data.prepare import PreparedData
from ml.models import pick_device
from ml.steps import train_step
from ml.train import TrainResult

GPU_LIMIT = "gpu"  # global concurrency limit, slots = GPUs on the worker (`make deploy` creates it)


def gpu_slot(device: str, devices: int = 1) -> AbstractContextManager[None]:
    """A slot of the `gpu` limit per GPU (train.devices) when training will run on CUDA, nothing otherwise: CPU
    runs never wait.

    Without the limit (an ephemeral run, or a server where `make deploy` was not run) Prefect logs a warning
    and trains without waiting.
    """
    if pick_device(device).type != "cuda":
        return nullcontext()
    return concurrency(GPU_LIMIT, occupy=devices)


@task(name="train", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=30)
def train_model(cfg: RunConfig, prepared: PreparedData, run_dir: Path) -> TrainResult:
    """A retry reuses run_dir, so it continues after the last finished epoch (train.resume) instead of epoch 1."""
    with gpu_slot(cfg.train.device, cfg.train.devices):
        return train_step(cfg, prepared, run_dir)
