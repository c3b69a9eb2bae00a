"""The learning-rate schedule and the time budget it follows (train.scheduler, train.time_budget_min).

    sched = make_scheduler(cfg.train, opt, planned=12 * steps_per_epoch)
    budget = Budget(minutes, planned, spent_before=0.0, start=time.perf_counter())
    sched.at(done, budget.elapsed())   # after every optimizer step: the rate of the next one
    budget.ends(done, elapsed_s)       # stop after this optimizer step?

A per-batch cosine or OneCycle rate is a function of how far the run is: the larger of the fraction of the
planned steps done and the fraction of the time budget spent. So it ends annealed where the run ends, whichever
of the two ends it, and follows the machine's actual rate: a busy start or a slow validation stretches or
shortens the rest of the schedule instead of ending it at a step count guessed early. A resumed run counts the
time spent before, so it continues where the schedule was. The budget is checked after every optimizer step,
so a run stops inside an epoch (the loop then validates and saves as after any epoch).
"""

from __future__ import annotations

import math
import time

import torch

from ml.config.training import TrainConfig

# torch's OneCycleLR defaults: warm-up over 30% from max/25, cosine down to max/25e4, momentum 0.95 -> 0.85 -> 0.95
WARMUP, START_DIV, FINAL_DIV, MOMENTUM = 0.3, 25.0, 1e4, (0.85, 0.95)


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (1 + math.cos(math.pi * pct))


class Schedule:
    """A per-batch cosine or OneCycle learning rate (and OneCycle's momentum) over `planned` optimizer steps and,
    with `seconds`, over the time budget: `at(done, elapsed_s)` sets the rate of the next step."""

    def __init__(self, opt: torch.optim.Optimizer, kind: str, lr: float, planned: int, seconds: float = math.inf):
        self.opt, self.kind, self.lr, self.planned, self.seconds = opt, kind, lr, planned, seconds
        self.at(0, 0.0)

    def progress(self, done: int, elapsed_s: float) -> float:
        return min(1.0, max(done / max(self.planned, 1), elapsed_s / self.seconds))

    def rate(self, p: float) -> tuple[float, float | None]:
        """(learning rate, momentum or None) at progress p in [0, 1]."""
        if self.kind == "cosine":
            return _cos(self.lr, 0.0, p), None
        low, high = MOMENTUM
        if p < WARMUP:
            return _cos(self.lr / START_DIV, self.lr, p / WARMUP), _cos(high, low, p / WARMUP)
        pct = (p - WARMUP) / (1 - WARMUP)
        return _cos(self.lr, self.lr / (START_DIV * FINAL_DIV), pct), _cos(low, high, pct)

    def at(self, done: int, elapsed_s: float) -> None:
        lr, momentum = self.rate(self.progress(done, elapsed_s))
        for group in self.opt.param_groups:
            group["lr"] = lr
            if momentum is not None and "betas" in group:
                group["betas"] = (momentum, *group["betas"][1:])
            elif momentum is not None and "momentum" in group:
                group["momentum"] = momentum


def make_scheduler(
    tc: TrainConfig, opt: torch.optim.Optimizer, planned: int
) -> Schedule | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """Cosine and OneCycle follow the run's progress per optimizer step (Schedule); plateau steps per epoch."""
    if tc.scheduler in ("cosine", "onecycle"):
        seconds = 60 * tc.time_budget_min if tc.time_budget_min else math.inf
        return Schedule(opt, tc.scheduler, tc.lr, planned, seconds)
    if tc.scheduler == "plateau":
        mode = "min" if tc.monitor == "loss" else "max"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=1)
    return None


class Budget:
    """train.time_budget_min over every call of a run: the time spent before a resume counts."""

    def __init__(self, minutes: float | None, planned: int, spent_before: float, start: float):
        self.minutes, self.planned, self.spent_before, self.start = minutes, planned, spent_before, start
        self.seconds = 60 * minutes if minutes else math.inf

    def elapsed(self) -> float:
        return self.spent_before + time.perf_counter() - self.start

    def ends(self, done: int, elapsed_s: float) -> bool:
        """Whether the budget stops the run after `done` of its planned steps."""
        return done < self.planned and elapsed_s > self.seconds
