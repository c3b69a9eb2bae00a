"""The learning-rate schedule and the time budget it is fitted to (train.scheduler, train.time_budget_min).

    sched, per_step = make_scheduler(cfg.train, opt, steps_per_epoch)
    budget = Budget(minutes, planned=12 * steps_per_epoch, spent_before=0.0, fitted=None, start=time.perf_counter())
    budget.fit(sched, done=40, elapsed_s=30.0)   # a few steps into a call, and after its first epoch
    budget.ends(done, elapsed_s)                 # stop after this optimizer step?

The budget is checked after every optimizer step, so it stops inside an epoch (the loop then validates and saves
as after any epoch). A per-batch cosine or OneCycle schedule is shortened to end where the budget does, so a run
the budget cuts short still anneals; a resumed run counts the time spent before and keeps the length it was
fitted to.
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


def fit_schedule_to_budget(sched: Any, planned: int, done: int, left_s: float, step_s: float) -> int:
    """How many optimizer steps the time budget holds (at least those done, at most the planned ones); a per-batch
    cosine or OneCycle schedule is shortened to end there, so a run the budget cuts short still anneals instead
    of stopping at a high learning rate."""
    fits = max(done, min(planned, done + math.floor(max(left_s, 0.0) / max(step_s, 1e-9))))
    set_schedule_length(sched, fits)
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
    """train.time_budget_min over every call of a run, counted in optimizer steps: time spent before a resume
    counts, and a resumed run keeps the step its schedule was fitted to end at (`fitted`: for the same budget;
    None: the planned steps). `steps_before`: the steps done before this call (its own rate is measured)."""

    def __init__(
        self,
        minutes: float | None,
        planned: int,
        spent_before: float,
        fitted: int | None,
        start: float,
        steps_before: int = 0,
    ):
        self.minutes, self.planned, self.spent_before, self.start = minutes, planned, spent_before, start
        self.steps_before = steps_before
        self.seconds = 60 * minutes if minutes else math.inf
        self.last_step = min(planned, fitted or planned)  # where the schedule ends

    def elapsed(self) -> float:
        return self.spent_before + time.perf_counter() - self.start

    def fit(self, sched: Any, done: int, elapsed_s: float) -> int:
        """The steps the rest of the budget holds at this call's rate so far (validation included once an epoch
        has ended); a per-batch schedule ends there. Without one the run stops on the clock alone."""
        step_s = (elapsed_s - self.spent_before) / max(done - self.steps_before, 1)
        fits = fit_schedule_to_budget(sched, self.planned, done, self.seconds - elapsed_s, step_s)
        log.info("time budget of %.1f min holds %d of %d steps", self.minutes, fits, self.planned)
        self.last_step = self.planned if sched is None else fits
        return self.last_step

    def ends(self, done: int, elapsed_s: float) -> bool:
        """Whether the budget stops the run after `done` steps: time spent, or the fitted schedule at its end."""
        return done < self.planned and (elapsed_s > self.seconds or done >= self.last_step)
