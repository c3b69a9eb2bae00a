"""Data-parallel training on several devices: train.devices > 1.

`launch` starts one process per device (spawned, like torchrun's workers), joins them in a process group (NCCL
on CUDA, one GPU per rank; gloo on CPU) and runs the usual training function in each. ml.training.loop.fit sees the
group: it wraps the model in DistributedDataParallel, gives each rank its share of every epoch, validates and
saves checkpoints on rank 0 and broadcasts its metrics and clock, so every rank stops after the same epoch.
Rank 0's TrainResult comes back to the caller.

train.batch_size is per device: the effective batch is devices x batch_size. Each rank draws its own
augmentations and MixUp pairs (seed + rank); DDP starts every rank from rank 0's weights.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ml.config.run import RunConfig
from ml.data.prepare import PreparedData
from ml.training.loop import TrainResult
from ml.training.models import pick_device

TrainFn = Callable[[RunConfig, PreparedData, Path], TrainResult]
RESULT = "train_result.json"  # rank 0 writes it into run_dir; launch reads it back
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


def launch(train: TrainFn, cfg: RunConfig, prepared: PreparedData, run_dir: Path) -> TrainResult:
    """Run `train` (a module-level function, e.g. ml.training.classifier.train_classifier) on cfg.train.devices ranks.

    A rank that fails ends the run with its traceback; a new call with the same run_dir resumes from last.pt.
    """
    devices, device = cfg.train.devices, pick_device(cfg.train.device)
    if device.type == "mps":
        raise ValueError("train.devices > 1 needs CUDA or CPU: MPS has no process-group backend")
    if device.type == "cuda" and max(cfg.train.gpus or [devices - 1]) >= torch.cuda.device_count():
        wanted = cfg.train.gpus or f"{devices} GPUs"
        raise ValueError(f"train.devices={devices} ({wanted}), but only {torch.cuda.device_count()} GPUs are visible")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT).unlink(missing_ok=True)
    args = (devices, free_port(), train, cfg, prepared, run_dir)
    mp.start_processes(_rank_main, args=args, nprocs=devices, start_method="spawn")
    return TrainResult(**json.loads((run_dir / RESULT).read_text()))


def _rank_main(
    rank: int, world: int, port: int, train: TrainFn, cfg: RunConfig, prepared: PreparedData, run_dir: Path
) -> None:
    cuda = pick_device(cfg.train.device).type == "cuda"
    if cuda:
        torch.cuda.set_device(cfg.train.gpus[rank] if cfg.train.gpus else rank)  # "cuda" now means this rank's GPU
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # share the cores, do not oversubscribe
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s | rank {rank}/{world} | %(name)s - %(message)s",
    )
    backend, address = "nccl" if cuda else "gloo", f"tcp://127.0.0.1:{port}"
    # the others wait in a broadcast while rank 0 validates: a long validation (whole strokes pages) must not time out
    dist.init_process_group(backend, init_method=address, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)
    try:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": cfg.train.seed + rank})})
        result = train(cfg, prepared, run_dir)
        if rank == 0:
            tmp = run_dir / f"{RESULT}.tmp"
            tmp.write_text(json.dumps(asdict(result)))
            tmp.replace(run_dir / RESULT)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    """A local TCP port nobody listens on (the process group's rendezvous; the tests' servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
