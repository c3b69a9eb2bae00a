"""Training's share of the machine: slots of this machine's `training-<host>` limit, and on CUDA the GPUs no other
run holds.

The limit (`make worker` creates it) has one slot per GPU, or 1 on a machine without: a CPU training takes one
slot, a CUDA training `train.devices`, so trainings that share a machine queue for it (nine nightly retrains at
02:00 on a CPU worker train one at a time) instead of sharing its cores or GPU memory. A slot counts GPUs but
does not say which, so CUDA work also claims the GPUs it runs on (ml.training.gpus). Evaluation after training
takes one slot and GPU on CUDA; on CPU it does not queue.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from prefect import get_run_logger
from prefect.concurrency.sync import concurrency

from ml.config.run import RunConfig
from ml.training.gpus import claim_gpus
from ml.training.models import pick_device

# a global concurrency limit per machine, slots = its GPUs or 1 (`make worker` creates it, SLOTS=n to resize)
TRAINING_LIMIT = f"training-{socket.gethostname()}"


@contextmanager
def training_slots(cfg: RunConfig) -> Iterator[RunConfig]:
    """cfg for training, held until the block ends: on CUDA as `on_gpus(cfg, train.devices)`, on CPU one slot.

    Without the limit (an ephemeral run, or a machine where `make worker` was not run) Prefect logs a warning and
    training goes on without waiting for a slot.
    """
    if pick_device(cfg.train.device).type == "cuda":
        with on_gpus(cfg, cfg.train.devices) as placed:
            yield placed
        return
    with _slots(1):
        yield cfg


@contextmanager
def on_gpus(cfg: RunConfig, n: int) -> Iterator[RunConfig]:
    """cfg for work on `n` GPUs, held until the block ends: `n` slots of the machine's limit, then train.gpus set
    to `n` GPUs no other run holds (kept when train.gpus pins them). Unchanged off CUDA, and no slot taken."""
    if pick_device(cfg.train.device).type != "cuda":
        yield cfg
        return
    with _slots(n):
        if cfg.train.gpus is not None:
            yield cfg
            return
        with claim_gpus(n, torch.cuda.device_count()) as ids:
            get_run_logger().info("on GPU(s) %s", ids)
            yield cfg.model_copy(update={"train": cfg.train.model_copy(update={"gpus": ids})})


@contextmanager
def _slots(n: int) -> Iterator[None]:
    """`n` slots of TRAINING_LIMIT, logged when taken (with the wait) and when released."""
    asked = time.monotonic()
    with concurrency(TRAINING_LIMIT, occupy=n):
        logger = get_run_logger()
        logger.info("holding %d slot(s) of %s (waited %.0f s)", n, TRAINING_LIMIT, time.monotonic() - asked)
        try:
            yield
        finally:
            logger.info("released %d slot(s) of %s", n, TRAINING_LIMIT)
