"""Training task: holds `gpu` slots while it trains on CUDA, on GPUs of the machine no other training holds; a
retry resumes from the run's last checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from ml.config import RunConfig
from ml.data.prepare import PreparedData
from ml.gpus import claim_gpus
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
    with gpu_slot(cfg.train.device, cfg.train.devices), on_free_gpus(cfg) as claimed:
        return train_step(claimed, prepared, run_dir)


@contextmanager
def on_free_gpus(cfg: RunConfig) -> Iterator[RunConfig]:
    """cfg with train.gpus set to GPUs of this machine that no other training holds, held until the block ends
    (the slot says how many GPUs are free in the pool, not which); unchanged off CUDA or when train.gpus pins them."""
    if cfg.train.gpus is not None or pick_device(cfg.train.device).type != "cuda":
        yield cfg
        return
    with claim_gpus(cfg.train.devices, torch.cuda.device_count()) as ids:
        get_run_logger().info("training on GPU(s) %s", ids)
        yield cfg.model_copy(update={"train": cfg.train.model_copy(update={"gpus": ids})})
