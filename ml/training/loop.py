"""The training loop: AdamW, cosine/OneCycle/plateau, label smoothing, class weights, focal loss, MixUp, weight EMA,
early stopping, best-by-metric checkpoint, resume from the last checkpoint, AMP on CUDA, gradient accumulation and
clipping, seeding, a progress bar; DistributedDataParallel when ml.training.distributed started it as one of several
ranks. Classifiers and segmenters (ml.training.segmenter passes its own objective) share it.

    result = fit(cfg, train_ds, val_ds, classes, run_dir)   # plain PyTorch, no Prefect

A crash loses at most the epoch in progress: `last.pt` is rewritten atomically after every epoch and a
new call with the same run_dir continues from it (train.resume=true), with the time already spent counted
against train.time_budget_min and the budget-fitted schedule length kept.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler
from tqdm import tqdm

from ml.config.run import RunConfig
from ml.config.training import TrainConfig
from ml.core.metrics import classification_metrics, predict
from ml.training import ranks
from ml.training.checkpoint import load_checkpoint, save_checkpoint
from ml.training.datasets import make_loader
from ml.training.losses import MapLoss, SegLoss, classifier_loss
from ml.training.mixup import MixUp
from ml.training.models import build_model, pick_device

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


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """'balanced' weights n / (k * count_c): a class half as frequent counts twice as much."""
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    counts[counts == 0] = 1.0
    return torch.tensor(len(targets) / (num_classes * counts), dtype=torch.float32)


def weighted_sampler(targets: np.ndarray, num_classes: int, seed: int) -> WeightedRandomSampler:
    """train.sampler=weighted: each sample drawn with its class's balanced weight, so every class comes up
    about equally often (with replacement; an epoch keeps its length, shared out over the ranks)."""
    weights = class_weights(targets, num_classes)[torch.as_tensor(targets, dtype=torch.long)]
    gen = torch.Generator().manual_seed(seed)
    n = ranks.shard_size(len(targets))
    return WeightedRandomSampler(weights.double(), num_samples=n, replacement=True, generator=gen)


def _scheduler(tc: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int) -> tuple[Any, bool]:
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
    _set_schedule_length(sched, fits * steps_per_epoch)
    return fits


def _set_schedule_length(sched: Any, total_steps: int) -> None:
    """Make a per-batch cosine or OneCycle schedule end after `total_steps`, from wherever it is now."""
    if isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR):
        sched.T_max = total_steps  # the recursive form telescopes to eta_min at the new T_max from wherever it is
    elif isinstance(sched, torch.optim.lr_scheduler.OneCycleLR):
        old, sched.total_steps = sched.total_steps, total_steps
        for phase in sched._schedule_phases:  # torch keeps no public setter; phase ends scale with the length
            phase["end_step"] = (phase["end_step"] + 1) * total_steps / old - 1


def _resumed_schedule(saved: dict[str, Any], fresh: dict[str, Any]) -> dict[str, Any]:
    """Progress from the checkpoint, length from the current config (a resumed run may have more epochs; `fit`
    then re-applies a budget-fitted length)."""
    length_keys = ("total_steps", "T_max", "_schedule_phases")
    return {**saved, **{k: v for k, v in fresh.items() if k in length_keys}}


def _improved(value: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return value < best if monitor == "loss" else value > best


def _train_epoch(
    model: nn.Module,
    batches: tqdm,
    criterion: nn.Module,
    opt: torch.optim.Optimizer,
    step_sched: Any,
    scaler: torch.amp.GradScaler,
    grad_clip: float | None,
    device: torch.device,
    use_amp: bool,
    accumulate: int = 1,
    mix: MixUp | None = None,
    ema: AveragedModel | None = None,
) -> tuple[float, int]:
    """One pass over the training batches; returns the summed loss and the number of samples. The optimizer (and
    `step_sched`, if given) steps every `accumulate` batches and after the last one; `ema` averages the weights
    after each step. `mix` turns each batch into MixUp pairs."""
    model.train()
    total, seen = 0.0, 0
    opt.zero_grad(set_to_none=True)
    for i, (x, y, *masks) in enumerate(batches, 1):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        masks = [m.to(device, non_blocking=True) for m in masks]  # (model.head=map) the crops' masks
        if mix is not None:
            x, y, *masks = mix(x, y, *masks)
        with torch.autocast(device.type, enabled=use_amp):
            loss = criterion(model(x), y, *masks)
        scaler.scale(loss / accumulate).backward()
        total += loss.item() * len(y)
        seen += len(y)
        batches.set_postfix(loss=f"{total / seen:.4f}")
        if i % accumulate == 0 or i == len(batches):
            if grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update_parameters(model)
            if step_sched is not None:
                step_sched.step()
    return total, seen


# (model, device, amp) -> validation metrics by name; must include train.monitor. Logged as val_<name>.
Validate = Callable[[nn.Module, torch.device, bool], dict[str, float]]


def _classifier_objective(
    tc: TrainConfig, head: str, train_ds: Dataset, val_ds: Dataset, classes: list[str], device: torch.device
) -> tuple[nn.Module, Sampler | None, Validate, MixUp | None]:
    """train.classifier_loss (class weights, label smoothing; with model.head=map plus the mask term), the class
    sampler, validation by accuracy / macro-F1 / AUROC, and MixUp (train.mixup > 0)."""
    targets = np.asarray(train_ds.targets)
    weight = class_weights(targets, len(classes)).to(device) if tc.class_weights == "balanced" else None
    criterion = classifier_loss(tc, weight).to(device)
    if head == "map":
        criterion = MapLoss(criterion, SegLoss(tc.loss, tc.focal_gamma), tc.mask_loss)
    mix = MixUp(tc.mixup, len(classes), tc.mixup_prob, tc.seed) if tc.mixup > 0 else None
    sampler = weighted_sampler(targets, len(classes), tc.seed) if tc.sampler == "weighted" else None
    val_loader = make_loader(val_ds, tc.batch_size, False, tc.num_workers, tc.seed)

    def validate(model: nn.Module, device: torch.device, amp: bool) -> dict[str, float]:
        probs, val_targets = predict(model, val_loader, device, amp)
        m = classification_metrics(val_targets, probs, classes)
        auroc = math.nan if m["auroc"] is None else m["auroc"]  # None: the split lacks a class
        return {**{k: m[k] for k in ("loss", "accuracy", "macro_f1")}, "auroc": auroc}

    return criterion, sampler, validate, mix


class _Budget:
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


@dataclass
class _Trainer:
    """Everything one training run steps, validates and saves in last.pt."""

    tc: TrainConfig
    model: nn.Module
    net: nn.Module  # what trains: the model, or its DistributedDataParallel wrapper on several devices
    opt: torch.optim.Optimizer
    sched: Any
    per_step: bool  # cosine and OneCycle step per batch; plateau per epoch, on the monitored metric
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
            criterion, sampler, validate, mix = _classifier_objective(
                tc, cfg.model.head, train_ds, val_ds, classes, device
            )
        else:
            (criterion, validate), sampler, mix = objective, None, None
        if sampler is None:  # on several ranks: one shuffle (rank 0's seed), split between them
            sampler = ranks.shard_sampler(train_ds, ranks.from_main(tc.seed))
        loader = make_loader(train_ds, tc.batch_size, True, tc.num_workers, tc.seed, sampler)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        sched, per_step = _scheduler(tc, opt, max(1, math.ceil(len(loader) / tc.accumulate)))
        scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema), use_buffers=True) if tc.ema else None
        return cls(tc, model, net, opt, sched, per_step, scaler, ema, loader, criterion, validate, mix, device, use_amp)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.loader) / self.tc.accumulate))

    @property
    def evaluated(self) -> nn.Module:
        """What is validated, checkpointed as best and exported: the weights' average with train.ema."""
        return self.model if self.ema is None else self.ema.module

    @property
    def batch_schedule(self) -> Any:
        """The scheduler if it steps per batch (the one the time budget can shorten), else None."""
        return self.sched if self.per_step else None

    def epoch(self, epoch: int) -> tuple[dict[str, float], dict[str, float]]:
        """Train one epoch and validate: (history row, validation metrics). On several ranks, rank 0 validates
        and every rank gets its metrics and its clock, so all take the same decisions after the epoch."""
        t0, tc = time.perf_counter(), self.tc
        ranks.set_epoch(self.loader.sampler, epoch)
        quiet = not (tc.progress and ranks.is_main())
        bar = tqdm(self.loader, desc=f"epoch {epoch}/{tc.epochs}", leave=False, disable=True if quiet else None)
        total, seen = _train_epoch(
            self.net,
            bar,
            self.criterion,
            self.opt,
            self.batch_schedule,
            self.scaler,
            tc.grad_clip,
            self.device,
            self.use_amp,
            tc.accumulate,
            self.mix,
            self.ema,
        )
        train_loss = ranks.mean_over_ranks(total, seen, self.device)
        m = self.validate(self.evaluated, self.device, self.use_amp) if ranks.is_main() else None
        row = {"epoch": epoch, "train_loss": train_loss, **{f"val_{k}": v for k, v in (m or {}).items()}}
        row |= {"lr": self.opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}  # the rate it trained at
        row, m = ranks.from_main((row, m))
        if self.sched is not None and not self.per_step:
            self.sched.step(m[tc.monitor])
        return row, m

    def resume(self, last_path: Path, state: dict[str, Any]) -> dict[str, Any]:
        """Load `last.pt` back (the schedule's length comes from the current config) and return its run state;
        a key an older checkpoint lacks keeps its value in `state`."""
        ckpt = load_checkpoint(last_path, self.device)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(_resumed_schedule(ckpt["scheduler"], self.sched.state_dict()))
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
        return {k: ckpt.get(k, v) for k, v in state.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else {},
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
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    # elapsed_s: time counted against the budget, over every call; budget_epochs: what budget_min was fitted to
    state = {"epoch": 0, "best_metric": None, "best_epoch": 0, "bad_epochs": 0, "history": []}
    state |= {"elapsed_s": 0.0, "budget_epochs": None, "budget_min": tc.time_budget_min}
    resumed_from = None
    if tc.resume and last_path.exists():
        state = trainer.resume(last_path, state)
        resumed_from = state["epoch"]
        log.info("resuming %s after epoch %d (%.0f s of the budget spent)", last_path, resumed_from, state["elapsed_s"])
    fitted = state["budget_epochs"] if state["budget_min"] == tc.time_budget_min else None  # a new budget: re-fit
    budget = _Budget(tc.time_budget_min, tc.epochs, state["elapsed_s"], fitted, start)
    state["budget_min"] = tc.time_budget_min
    _set_schedule_length(trainer.batch_schedule, budget.last_epoch * trainer.steps_per_epoch)
    stopped_early = state["bad_epochs"] >= (tc.early_stopping or 10**9)
    if not stopped_early and budget.ends(state["epoch"], budget.spent_before):
        log.info("time budget of %.1f min used before epoch %d: stopping", tc.time_budget_min, state["epoch"] + 1)
        stopped_early = True
    model_facts = {"classes": classes, "config": cfg.model_dump_json()}
    for epoch in range(state["epoch"] + 1, tc.epochs + 1):
        if stopped_early:
            break
        row, m = trainer.epoch(epoch)
        state["history"].append(row)
        state["epoch"] = epoch
        if _improved(m[tc.monitor], state["best_metric"], tc.monitor):
            state.update(best_metric=m[tc.monitor], best_epoch=epoch, bad_epochs=0)
            if ranks.is_main():
                save_checkpoint({"model": trainer.evaluated.state_dict(), "epoch": epoch, **model_facts}, best_path)
        else:
            state["bad_epochs"] += 1
        stopped_early = bool(tc.early_stopping) and state["bad_epochs"] >= tc.early_stopping
        state["elapsed_s"] = ranks.from_main(budget.elapsed())
        if tc.time_budget_min and epoch == (resumed_from or 0) + 1:
            sched, steps = trainer.batch_schedule, trainer.steps_per_epoch
            state["budget_epochs"] = budget.fit(sched, steps, epoch, row["seconds"], state["elapsed_s"])
        if budget.ends(epoch, state["elapsed_s"]):
            log.info("time budget of %.1f min used after epoch %d: stopping", tc.time_budget_min, epoch)
            stopped_early = True
        if ranks.is_main():
            save_checkpoint({**trainer.state_dict(), **model_facts, **state}, last_path)
            _log_epoch(row, m, tc.epochs, stopped_early)
        if on_epoch is not None:
            on_epoch(row)

    ranks.check_in_sync(trainer.model, trainer.device)
    if ranks.is_main():
        (run_dir / "history.json").write_text(json.dumps(state["history"], indent=1))
    return TrainResult(
        best_checkpoint=str(best_path),
        last_checkpoint=str(last_path),
        best_epoch=state["best_epoch"],
        best_metric=float(state["best_metric"]),
        epochs_run=state["epoch"],
        resumed_from=resumed_from,
        stopped_early=stopped_early,
        device=str(trainer.device) if ranks.world() == 1 else f"{trainer.device} x{ranks.world()}",
        seconds=time.perf_counter() - start,
        history=state["history"],
    )


def load_trained(checkpoint: Path, cfg: RunConfig, device: str | torch.device = "cpu") -> tuple[nn.Module, list[str]]:
    """The model of a best/last checkpoint, in eval mode, and its class names."""
    ckpt = load_checkpoint(checkpoint, device)
    model = build_model(cfg.model, cfg.data.channels, len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), list(ckpt["classes"])
