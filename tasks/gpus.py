"""GPU work in tasks: slots of the `gpu` limit, then GPUs of this machine that no other run holds.

A slot of Prefect's `gpu` limit counts GPUs across the pool but does not say which, so a task also claims the
GPUs it runs on (ml.training.gpus). Training takes train.devices of them; evaluation after it takes one, so it does not
land on a GPU another training holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from prefect import get_run_logger
from prefect.concurrency.sync import concurrency

from ml.config.run import RunConfig
from ml.training.gpus import claim_gpus
from ml.training.models import pick_device

GPU_LIMIT = "gpu"  # global concurrency limit, slots = GPUs on the worker (`make deploy` creates it)


@contextmanager
def on_gpus(cfg: RunConfig, n: int) -> Iterator[RunConfig]:
    """cfg for work on `n` GPUs, held until the block ends: `n` slots of the `gpu` limit, then train.gpus set to
    `n` GPUs no other run holds (kept when train.gpus pins them). Unchanged off CUDA: CPU work never waits.

    Without the limit (an ephemeral run, or a server where `make deploy` was not run) Prefect logs a warning and
    the work goes on without waiting for a slot.
    """
    if pick_device(cfg.train.device).type != "cuda":
        yield cfg
        return
    with concurrency(GPU_LIMIT, occupy=n):
        if cfg.train.gpus is not None:
            yield cfg
            return
        with claim_gpus(n, torch.cuda.device_count()) as ids:
            get_run_logger().info("on GPU(s) %s", ids)
            yield cfg.model_copy(update={"train": cfg.train.model_copy(update={"gpus": ids})})
