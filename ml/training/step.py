"""The training step of any model.task: the kind's trainer (TRAINERS), on one device or several (train.devices).

trained = train_step(cfg, prepared, run_dir[, on_epoch])   # on_epoch(history row) after each epoch's validation
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ml.config.run import RunConfig
from ml.core.kinds import KindRegistry
from ml.data.prepare import PreparedData
from ml.training import distributed
from ml.training.classifier import train_classifier
from ml.training.loop import TrainResult
from ml.training.models import pick_device
from ml.training.segmenter import train_segmenter

OnEpoch = Callable[[dict[str, float]], None]  # the epoch's history row (val_<metric>, ...); it may raise to stop
Trainer = Callable[[RunConfig, PreparedData, Path, OnEpoch | None], TrainResult]
TRAINERS: KindRegistry[Trainer] = KindRegistry("training", classify=train_classifier, segment=train_segmenter)


def train_step(cfg: RunConfig, prepared: PreparedData, run_dir: Path, on_epoch: OnEpoch | None = None) -> TrainResult:
    train = TRAINERS(cfg.model.task)
    if cfg.train.devices > 1:
        if on_epoch is not None:
            raise ValueError("a per-epoch callback runs in this process: train.devices > 1 trains in others")
        return distributed.launch(train, cfg, prepared, run_dir)
    on_run_gpu(cfg)
    return train(cfg, prepared, run_dir, on_epoch)


def on_run_gpu(cfg: RunConfig) -> None:
    """Make "cuda" mean the run's first claimed (or pinned) GPU in this thread: tasks run on threads, and a
    thread starts on GPU 0, which another training may hold."""
    if cfg.train.gpus and pick_device(cfg.train.device).type == "cuda":
        torch.cuda.set_device(cfg.train.gpus[0])
