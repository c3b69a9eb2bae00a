"""The learning-rate schedule and the time budget it is fitted to (train.scheduler, train.time_budget_min).

    sched, per_step = make_scheduler(cfg.train, opt, steps_per_epoch)
    budget = Budget(minutes, planned=12, spent_before=0.0, fitted=None, start=time.perf_counter())
    budget.fit(sched, steps_per_epoch, done=1, epoch_s=60.0, elapsed_s=60.0)   # after a call's first epoch
    budget.ends(epoch, elapsed_s)                                              # stop after this epoch?

A per-batch cosine or OneCycle schedule is shortened to end where the budget does, so a run the budget cuts short
still anneals; a resumed run counts the time spent before and keeps the length it was fitted to.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from ml.config.training import TrainConfig

log = logging.getLogger(__name__)


def make_scheduler(tc: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int) -> tuple[Any, bool]:
    """Returns (scheduler, steps per batch?) — cosine and OneCycle step per batch, plateau per epoch."""
    total = tc.epochs * steps_per_epoch
    if tc.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), True
    if tc.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=total), True
    if tc.scheduler == "plateau":
        mode = "min" if tc.monitor == "loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=1), False
    return None, False


def fit_schedule_to_budget(
    sched: Any, steps_per_epoch: int, planned: int, done: int, left_s: float, epoch_s: float
) -> int:
    """How many epochs the time budget holds (the one crossing it included, at least those done, at most the
    planned ones); a per-batch cosine or OneCycle schedule is shortened to end there, so a run the budget cuts
    short still anneals instead of stopping at a high learning rate."""
    fits = max(done, min(planned, done + math.ceil(max(left_s, 0.0) / max(epoch_s, 1e-9))))
    set_schedule_length(sched, fits * steps_per_epoch)
    return fits


def set_schedule_length(sched: Any, total_steps: int) -> None:
    """Make a per-batch cosine or OneCycle schedule end after `total_steps`, from wherever it is now."""
    if isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR):
        sched.T_max = total_steps  # the recursive form telescopes to eta_min at the new T_max from wherever it is
    elif isinstance(sched, torch.optim.lr_scheduler.OneCycleLR):
        old, sched.total_steps = sched.total_steps, total_steps
        for phase in sched._schedule_phases:  # torch keeps no public setter; phase ends scale with the length
            phase["end_step"] = (phase["end_step"] + 1) * total_steps / old - 1


def resumed_schedule(saved: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """Progress from the checkpoint, length from the current config (a resumed run may have more epochs; `fit`
    then re-applies a budget-fitted length)."""
    length_keys = ("total_steps", "T_max", "_schedule_phases")
    return {**saved, **{k: v for k, v in fresh.items() if k in length_keys}}


class Budget:
    """train.time_budget_min over every call of a run: time spent before a resume counts, and a resumed run keeps
    the epoch its schedule was fitted to end at (`fitted`: for the same budget; None: the planned epochs)."""

    def __init__(self, minutes: float | None, planned: int, spent_before: float, fitted: int | None, start: float):
        self.minutes, self.planned, self.spent_before, self.start = minutes, planned, spent_before, start
        self.seconds = 60 * minutes if minutes else math.inf
        self.last_epoch = min(planned, fitted or planned)  # where the schedule ends

    def elapsed(self) -> float:
        return self.spent_before + time.perf_counter() - self.start

    def fit(self, sched: Any, steps_per_epoch: int, done: int, epoch_s: float, elapsed_s: float) -> int:
        """After the first epoch of a call: the epochs the rest of the budget holds (the schedule ends there)."""
        left = self.seconds - elapsed_s
        self.last_epoch = fit_schedule_to_budget(sched, steps_per_epoch, self.planned, done, left, epoch_s)
        log.info("time budget of %.1f min holds %d of %d epochs", self.minutes, self.last_epoch, self.planned)
        return self.last_epoch

    def ends(self, epoch: int, elapsed_s: float) -> bool:
        """Whether the budget stops the run after `epoch`: spent, or as many epochs run as it was fitted to."""
        return epoch < self.planned and (elapsed_s > self.seconds or epoch >= self.last_epoch)
