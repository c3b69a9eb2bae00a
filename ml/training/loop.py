"""The training loop: AdamW, label smoothing, class weights, focal loss, MixUp, weight EMA, early stopping,
best-by-metric checkpoint, resume from the last checkpoint, AMP on CUDA, gradient accumulation and clipping,
seeding, a progress bar; DistributedDataParallel when ml.training.distributed started it as one of several ranks.
Classifiers and segmenters (ml.training.segmenter passes its own objective) share it; the schedule and the time
budget are ml.training.budget's, a classifier's loss, sampler and validation ml.training.objectives'.

    result = fit(cfg, train_ds, val_ds, classes, run_dir)   # plain PyTorch, no Prefect

A crash loses at most the epoch in progress: `last.pt` is rewritten atomically after every epoch and a
new call with the same run_dir continues from it (train.resume=true), with the time already spent counted
against train.time_budget_min and the schedule continuing where it was.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ml.config.run import RunConfig
from ml.config.training import TrainConfig
from ml.training import ranks
from ml.training.budget import Budget, Schedule, make_scheduler
from ml.training.checkpoint import load_checkpoint, save_checkpoint
from ml.training.datasets import make_loader
from ml.training.mixup import MixUp
from ml.training.models import build_model, pick_device
from ml.training.objectives import Validate, classifier_objective

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best_checkpoint: str
    last_checkpoint: str
    best_epoch: int
    best_metric: float
    epochs_run: int  # epochs finished, counting those before a resume
    resumed_from: int | None  # epoch the run continued after, if it resumed
    stopped_early: bool
    device: str
    seconds: float  # wall time of this call
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoopState:
    """What a run has done so far, saved in last.pt beside the weights so that a new call continues from it."""

    epoch: int = 0  # epochs finished
    best_metric: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the monitored metric last improved (early stopping)
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0  # optimizer steps taken, over every call
    elapsed_s: float = 0.0  # time counted against train.time_budget_min, over every call

    @classmethod
    def saved_in(cls, ckpt: dict[str, Any]) -> LoopState:
        """The state in a last.pt; a field an older checkpoint lacks keeps its fresh value."""
        fresh = cls()
        return cls(**{f.name: ckpt.get(f.name, getattr(fresh, f.name)) for f in fields(cls)})


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _improved(value: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return value < best if monitor == "loss" else value > best


@dataclass
class _Trainer:
    """Everything one training run steps, validates and saves in last.pt."""

    tc: TrainConfig
    model: nn.Module
    net: nn.Module  # what trains: the model, or its DistributedDataParallel wrapper on several devices
    opt: torch.optim.Optimizer
    sched: Any  # Schedule (cosine, OneCycle: set after every step), ReduceLROnPlateau (per epoch) or None
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None
    loader: DataLoader
    criterion: nn.Module
    validate: Validate
    mix: MixUp | None
    device: torch.device
    use_amp: bool

    @classmethod
    def build(
        cls,
        cfg: RunConfig,
        train_ds: Dataset,
        val_ds: Dataset | None,
        classes: list[str],
        objective: tuple[nn.Module, Validate] | None,
    ) -> _Trainer:
        tc, device = cfg.train, pick_device(cfg.train.device)
        use_amp = tc.amp and device.type == "cuda"
        model = build_model(cfg.model, cfg.data.channels, len(classes)).to(device)
        net = _data_parallel(model, device) if ranks.active() else model  # rank 0's weights on every rank
        if objective is None:
            criterion, sampler, validate, mix = classifier_objective(
                tc, cfg.model.head, train_ds, val_ds, classes, device
            )
        else:
            (criterion, validate), sampler, mix = objective, None, None
        if sampler is None:  # on several ranks: one shuffle (rank 0's seed), split between them
            sampler = ranks.shard_sampler(train_ds, ranks.from_main(tc.seed))
        loader = make_loader(train_ds, tc.batch_size, True, tc.num_workers, tc.seed, sampler, train=True)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        sched = make_scheduler(tc, opt, tc.epochs * max(1, math.ceil(len(loader) / tc.accumulate)))
        scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema), use_buffers=True) if tc.ema else None
        return cls(tc, model, net, opt, sched, scaler, ema, loader, criterion, validate, mix, device, use_amp)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.loader) / self.tc.accumulate))

    @property
    def evaluated(self) -> nn.Module:
        """What is validated, checkpointed as best and exported: the weights' average with train.ema."""
        return self.model if self.ema is None else self.ema.module

    def train_batches(self, batches: tqdm, stop: Callable[[], bool]) -> tuple[float, int]:
        """One pass over the training batches; returns the summed loss and the number of samples. The optimizer
        steps every train.accumulate batches and after the last one; the EMA averages
        the weights after each step; MixUp (train.mixup) mixes each batch. `stop()`, asked after every step, ends
        the pass early (the time budget) and sets the next step's learning rate."""
        tc, net, opt, device = self.tc, self.net, self.opt, self.device
        net.train()
        total, seen = 0.0, 0
        opt.zero_grad(set_to_none=True)
        for i, (x, y, *masks) in enumerate(batches, 1):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            masks = [m.to(device, non_blocking=True) for m in masks]  # (model.head=map) the crops' masks
            if self.mix is not None:
                x, y, *masks = self.mix(x, y, *masks)
            with torch.autocast(device.type, enabled=self.use_amp):
                loss = self.criterion(net(x), y, *masks)
            self.scaler.scale(loss / tc.accumulate).backward()
            total += loss.item() * len(y)
            seen += len(y)
            batches.set_postfix(loss=f"{total / seen:.4f}")
            if i % tc.accumulate == 0 or i == len(batches):
                self._step()
                if stop():
                    break
        return total, seen

    def _step(self) -> None:
        if self.tc.grad_clip:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.net.parameters(), self.tc.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def epoch(self, epoch: int, stop: Callable[[], bool]) -> tuple[dict[str, float], dict[str, float]]:
        """Train one epoch and validate: (history row, validation metrics). On several ranks, rank 0 validates
        and every rank gets its metrics and its clock, so all take the same decisions after the epoch."""
        t0, tc = time.perf_counter(), self.tc
        ranks.set_epoch(self.loader.sampler, epoch)
        quiet = not (tc.progress and ranks.is_main())
        bar = tqdm(self.loader, desc=f"epoch {epoch}/{tc.epochs}", leave=False, disable=True if quiet else None)
        total, seen = self.train_batches(bar, stop)
        train_loss = ranks.mean_over_ranks(total, seen, self.device)
        m = self.validate(self.evaluated, self.device, self.use_amp) if ranks.is_main() else None
        row = {"epoch": epoch, "train_loss": train_loss, **{f"val_{k}": v for k, v in (m or {}).items()}}
        row |= {"lr": self.opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}  # the rate it trained at
        row, m = ranks.from_main((row, m))
        if isinstance(self.sched, ReduceLROnPlateau):
            self.sched.step(m[tc.monitor])
        return row, m

    def resume(self, last_path: Path) -> dict[str, Any]:
        """Load `last.pt` back and return it (a per-step schedule's place comes from the loop's state)."""
        ckpt = load_checkpoint(last_path, self.device)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if isinstance(self.sched, ReduceLROnPlateau):
            self.sched.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
        return ckpt

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if isinstance(self.sched, ReduceLROnPlateau) else {},
            "scaler": self.scaler.state_dict(),
            **({} if self.ema is None else {"ema": self.ema.state_dict()}),
        }


def _data_parallel(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """DDP over the process group: gradients are averaged across ranks every backward pass. static_graph: the
    same parameters take part in every step, some never (a U-Net leaves its encoder's deepest stages unused)."""
    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, static_graph=True)


def _log_epoch(row: dict[str, float], m: dict[str, float], epochs: int, stopped: bool) -> None:
    metrics = " ".join(f"val_{k}={v:.4f}" for k, v in m.items())
    line = f"epoch {row['epoch']}/{epochs} train_loss={row['train_loss']:.4f} {metrics} ({row['seconds']:.1f}s)"
    log.info("%s%s", line, " early stop" if stopped else "")


@dataclass
class _Run:
    """One call of `fit`: the trainer, the state it continues, the budget, and where it saves."""

    tc: TrainConfig
    trainer: _Trainer
    state: LoopState
    budget: Budget
    resumed_from: int | None  # the epoch it continued after, if it resumed
    run_dir: Path
    facts: dict[str, Any]  # saved in every checkpoint: the class names and the resolved config

    def stopped_before(self) -> bool:
        """Whether an earlier call already ended the run: early stopping, or the budget spent."""
        tc, st = self.tc, self.state
        if st.bad_epochs >= (tc.early_stopping or 10**9):
            return True
        if self.budget.ends(st.steps, self.budget.spent_before):
            log.info("time budget of %.1f min used before epoch %d: stopping", tc.time_budget_min, st.epoch + 1)
            return True
        return False

    def after_step(self) -> bool:
        """Count an optimizer step, set the next one's rate from the run's progress (steps done and, with
        train.time_budget_min, the budget spent) and say whether the budget is spent."""
        st, budget, sched = self.state, self.budget, self.trainer.sched
        st.steps += 1
        # one clock: every rank takes the same rate and stops at the same step
        elapsed = ranks.from_main(budget.elapsed()) if self.tc.time_budget_min else 0.0
        if isinstance(sched, Schedule):
            sched.at(st.steps, elapsed)
        return budget.ends(st.steps, elapsed)

    def epoch(self, epoch: int) -> tuple[dict[str, float], bool]:
        """Train and validate one epoch, keep the best checkpoint, save last.pt: (history row, stop now?)."""
        tc, st, trainer = self.tc, self.state, self.trainer
        row, m = trainer.epoch(epoch, self.after_step)
        st.history.append(row)
        st.epoch = epoch
        if _improved(m[tc.monitor], st.best_metric, tc.monitor):
            st.best_metric, st.best_epoch, st.bad_epochs = m[tc.monitor], epoch, 0
            if ranks.is_main():
                best = {"model": trainer.evaluated.state_dict(), "epoch": epoch, **self.facts}
                save_checkpoint(best, self.run_dir / "best.pt")
        else:
            st.bad_epochs += 1
        stopped = bool(tc.early_stopping) and st.bad_epochs >= tc.early_stopping
        st.elapsed_s = ranks.from_main(self.budget.elapsed())
        if self.budget.ends(st.steps, st.elapsed_s):
            log.info("time budget of %.1f min used in epoch %d: stopping", tc.time_budget_min, epoch)
            stopped = True
        if ranks.is_main():
            save_checkpoint({**trainer.state_dict(), **self.facts, **asdict(st)}, self.run_dir / "last.pt")
            _log_epoch(row, m, tc.epochs, stopped)
        return row, stopped


def fit(
    cfg: RunConfig,
    train_ds: Dataset,
    val_ds: Dataset | None,
    classes: list[str],
    run_dir: Path,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    objective: tuple[nn.Module, Validate] | None = None,
) -> TrainResult:
    """Train cfg.model on train_ds, select by cfg.train.monitor; checkpoints go to run_dir.

    `objective` (criterion, validate) replaces the classifier's (ce/focal, MixUp; accuracy/macro-F1 on val_ds):
    ml.training.segmenter passes its losses and a whole-image validation, and val_ds=None.
    """
    tc, start = cfg.train, time.perf_counter()
    seed_everything(tc.seed, tc.deterministic)
    trainer = _Trainer.build(cfg, train_ds, val_ds, classes, objective)
    run = _start(cfg, trainer, classes, run_dir, start)
    stopped = run.stopped_before()
    for epoch in range(run.state.epoch + 1, tc.epochs + 1):
        if stopped:
            break
        row, stopped = run.epoch(epoch)
        if on_epoch is not None:
            on_epoch(row)
    ranks.check_in_sync(trainer.model, trainer.device)
    st = run.state
    if ranks.is_main():
        (run_dir / "history.json").write_text(json.dumps(st.history, indent=1))
    return TrainResult(
        best_checkpoint=str(run_dir / "best.pt"),
        last_checkpoint=str(run_dir / "last.pt"),
        best_epoch=st.best_epoch,
        best_metric=float(st.best_metric),
        epochs_run=st.epoch,
        resumed_from=run.resumed_from,
        stopped_early=stopped,
        device=str(trainer.device) if ranks.world() == 1 else f"{trainer.device} x{ranks.world()}",
        seconds=time.perf_counter() - start,
        history=st.history,
    )


def _start(cfg: RunConfig, trainer: _Trainer, classes: list[str], run_dir: Path, start: float) -> _Run:
    """A fresh run, or (train.resume) the one run_dir's last.pt left: its state, the budget it spent and its
    place in the schedule."""
    tc, last_path = cfg.train, run_dir / "last.pt"
    run_dir.mkdir(parents=True, exist_ok=True)
    state, resumed_from = LoopState(), None
    if tc.resume and last_path.exists():
        state = LoopState.saved_in(trainer.resume(last_path))
        resumed_from = state.epoch
        log.info("resuming %s after epoch %d (%.0f s of the budget spent)", last_path, resumed_from, state.elapsed_s)
    budget = Budget(tc.time_budget_min, tc.epochs * trainer.steps_per_epoch, state.elapsed_s, start)
    if isinstance(trainer.sched, Schedule):
        trainer.sched.at(state.steps, state.elapsed_s)
    facts = {"classes": classes, "config": cfg.model_dump_json()}
    return _Run(tc, trainer, state, budget, resumed_from, run_dir, facts)


def load_trained(checkpoint: Path, cfg: RunConfig, device: str | torch.device = "cpu") -> tuple[nn.Module, list[str]]:
    """The model of a best/last checkpoint, in eval mode, and its class names."""
    ckpt = load_checkpoint(checkpoint, device)
    model = build_model(cfg.model, cfg.data.channels, len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), list(ckpt["classes"])
