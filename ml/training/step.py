"""The training step of any model.task: the kind's trainer (TRAINERS), on one device or several (train.devices).

trained = train_step(cfg, prepared, run_dir)
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

Trainer = Callable[[RunConfig, PreparedData, Path], TrainResult]
TRAINERS: KindRegistry[Trainer] = KindRegistry("training", classify=train_classifier, segment=train_segmenter)


def train_step(cfg: RunConfig, prepared: PreparedData, run_dir: Path) -> TrainResult:
    train = TRAINERS(cfg.model.task)
    _checkpoints_of_this_split(prepared, run_dir)
    if cfg.train.devices > 1:
        return distributed.launch(train, cfg, prepared, run_dir)
    on_run_gpu(cfg)
    return train(cfg, prepared, run_dir)


def _checkpoints_of_this_split(prepared: PreparedData, run_dir: Path) -> None:
    """A retried flow run validates its data again. When the split changed since run_dir's checkpoints were
    written, they move to run_dir/stale-<old split id>/ and training starts over instead of resuming on other data."""
    run_dir.mkdir(parents=True, exist_ok=True)
    marker, now = run_dir / "split.id", prepared.split_id
    before = marker.read_text() if marker.exists() else now
    if before != now:
        stale = run_dir / f"stale-{before}"
        stale.mkdir(exist_ok=True)
        for name in ("last.pt", "best.pt"):
            if (run_dir / name).exists():
                (run_dir / name).replace(stale / name)
        log.warning(
            "the split changed since %s's checkpoints (%s -> %s): moved to %s, training from epoch 1",
            run_dir,
            before,
            now,
            stale,
        )
    marker.write_text(now)


def on_run_gpu(cfg: RunConfig) -> None:
    """Make "cuda" mean the run's first claimed (or pinned) GPU in this thread: tasks run on threads, and a
    thread starts on GPU 0, which another training may hold."""
    if cfg.train.gpus and pick_device(cfg.train.device).type == "cuda":
        torch.cuda.set_device(cfg.train.gpus[0])
