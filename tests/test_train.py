import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ml.training.budget
import ml.training.loop
from ml.config.run import load_config
from ml.data.prepare import prepare_dataset
from ml.training.budget import Budget, Schedule
from ml.training.checkpoint import load_checkpoint
from ml.training.classifier import datasets
from ml.training.loop import fit
from ml.training.run_dirs import claim_run_dir, mark_published
from ml.training.samplers import class_weights
from ml.training.step import train_step
from tests.conftest import tiny_overrides


@pytest.fixture
def prepared(tiny_cfg, tmp_path):
    return prepare_dataset(tiny_cfg.data, tmp_path / "prep")


class Crash(RuntimeError):
    pass


def test_resume_continues_after_the_last_finished_epoch(tiny_cfg, prepared, tmp_path):
    cfg = tiny_cfg.model_copy(update={"train": tiny_cfg.train.model_copy(update={"epochs": 3})})
    train_ds, val_ds = datasets(cfg, prepared)
    run_dir = tmp_path / "run"

    def crash_after_two(row):
        if row["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        fit(cfg, train_ds, val_ds, prepared.classes, run_dir, on_epoch=crash_after_two)
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2

    seen = []
    result = fit(cfg, train_ds, val_ds, prepared.classes, run_dir, on_epoch=lambda row: seen.append(row["epoch"]))
    assert result.resumed_from == 2
    assert seen == [3]  # only the missing epoch ran
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert json.loads((run_dir / "history.json").read_text())[-1]["epoch"] == 3


def test_a_run_folder_is_keyed_by_the_split_and_the_training_config(tmp_path):
    scratch = tmp_path / "validate"

    def claim(**over):
        cfg = load_config("demo", tiny_overrides(tmp_path, **over))
        return cfg, claim_run_dir(cfg, prepare_dataset(cfg.data, scratch), scratch)

    cfg, first = claim()
    assert first.why == "fresh: first run of this model here" and first.path.parent == tmp_path / "runs" / "demo"
    assert Path(first.prepared.split_csv) == first.path / "split.csv" and not scratch.exists()
    train_step(cfg, first.prepared, first.path)

    cfg, again = claim(**{"gate.min": {"accuracy": 0.5}, "alerts.webhook_url": "https://example.com/hook"})
    assert again.path == first.path and again.why == f"resuming {first.path.name}"  # the gate is not training
    assert train_step(cfg, again.prepared, again.path).resumed_from == cfg.train.epochs

    _, lr = claim(**{"train.lr": 0.01})
    assert lr.path != first.path and lr.why.startswith("fresh: config changed (train.lr 0.002 -> 0.01) since")
    _, data = claim(**{"data.val_fraction": 0.4})
    assert data.path.name.split("-")[0] != first.path.name.split("-")[0] and "fresh: data changed (split" in data.why

    mark_published(first.path, "v1")  # a finished run is not resumed: it moves aside, the key starts over
    _, done = claim()
    assert done.path == first.path and done.why == f"fresh: {first.path.name} was published as v1 (moved aside)"
    assert (tmp_path / "runs" / "demo" / f"{first.path.name}-published-v1" / "last.pt").is_file()
    assert not (done.path / "last.pt").exists()


def test_no_resume_starts_over(tiny_cfg, prepared, tmp_path):
    train_ds, val_ds = datasets(tiny_cfg, prepared)
    fit(tiny_cfg, train_ds, val_ds, prepared.classes, tmp_path / "run")
    cfg = load_config("demo", tiny_overrides(tmp_path, **{"train.resume": False}))
    result = fit(cfg, train_ds, val_ds, prepared.classes, tmp_path / "run")
    assert result.resumed_from is None and len(result.history) == cfg.train.epochs


def test_best_checkpoint_holds_the_best_epoch(tiny_cfg, prepared, tmp_path):
    train_ds, val_ds = datasets(tiny_cfg, prepared)
    result = fit(tiny_cfg, train_ds, val_ds, prepared.classes, tmp_path / "run")
    best = load_checkpoint(Path(result.best_checkpoint))
    scores = [h["val_macro_f1"] for h in result.history]
    assert best["epoch"] == result.best_epoch == 1 + int(np.argmax(scores))
    assert result.best_metric == pytest.approx(max(scores))
    assert best["classes"] == prepared.classes


def test_early_stopping_stops_when_the_metric_stalls(tmp_path):
    # lr ~0 on a LayerNorm model (no BatchNorm statistics to drift): the metric is flat after epoch 1,
    # so patience 1 stops after epoch 2
    cfg = load_config(
        "demo",
        tiny_overrides(
            tmp_path,
            **{
                "train.epochs": 6,
                "train.lr": 1e-12,
                "model.name": "convnext_atto",
                "train.early_stopping": 1,
                "train.scheduler": "none",
            },
        ),
    )
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    train_ds, val_ds = datasets(cfg, prepared)
    result = fit(cfg, train_ds, val_ds, prepared.classes, tmp_path / "run")
    assert result.stopped_early and result.epochs_run == 2


def test_a_spent_time_budget_stops_in_the_first_epoch_and_still_validates_and_saves(tmp_path):
    cfg = load_config("demo", tiny_overrides(tmp_path, **{"train.epochs": 5, "train.time_budget_min": 1e-6}))
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    train_ds, val_ds = datasets(cfg, prepared)
    result = fit(cfg, train_ds, val_ds, prepared.classes, tmp_path / "run")
    assert result.stopped_early and result.epochs_run == 1 and Path(result.best_checkpoint).exists()
    assert "val_macro_f1" in result.history[0] and Path(result.last_checkpoint).exists()


class Ticking(torch.utils.data.Dataset):
    """A training set on a fake clock that moves one second per image fetched, so budgets are exact."""

    def __init__(self, ds) -> None:
        self.ds, self.targets, self.now = ds, ds.targets, 0.0

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        self.now += 1.0
        return self.ds[i]


def _on_ticking_clock(tmp_path, monkeypatch, over: dict):
    """The shrunk demo run with its training set on a Ticking clock: an epoch takes len(train_ds) seconds."""
    cfg = load_config("demo", tiny_overrides(tmp_path, **over))
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    train_ds, val_ds = datasets(cfg, prepared)
    clock = Ticking(train_ds)
    for module in (ml.training.loop, ml.training.budget):
        monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    return cfg, prepared, clock, val_ds


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_a_resumed_run_counts_the_budget_spent_before_and_continues_the_schedule(tmp_path, monkeypatch, scheduler):
    # batches of 8: enough steps per epoch for 3 epochs of OneCycle to end annealed, whatever the split's train size
    over = {"train.epochs": 6, "train.scheduler": scheduler, "train.batch_size": 8}
    cfg, prepared, clock, val_ds = _on_ticking_clock(tmp_path, monkeypatch, over)

    def budget(epochs: float):
        minutes = epochs * len(clock) / 60
        return cfg.model_copy(update={"train": cfg.train.model_copy(update={"time_budget_min": minutes})})

    def crash_after_two(row):
        if row["epoch"] == 2:
            raise Crash

    run_dir, seen = tmp_path / "run", []
    with pytest.raises(Crash):  # the schedule ends 2.5 epochs in, where the budget stops the run
        fit(budget(2.5), clock, val_ds, prepared.classes, run_dir, on_epoch=crash_after_two)

    result = fit(budget(1.5), clock, val_ds, prepared.classes, run_dir, on_epoch=lambda row: seen.append(row["epoch"]))
    assert seen == [] and result.stopped_early and result.epochs_run == 2  # the 2 epochs before used it up

    result = fit(budget(2.5), clock, val_ds, prepared.classes, run_dir, on_epoch=lambda row: seen.append(row["epoch"]))
    assert seen == [3] and result.stopped_early  # half an epoch more, not 3 epochs on a fresh budget
    whole = fit(budget(2.5), clock, val_ds, prepared.classes, tmp_path / "uninterrupted")
    lrs = [row["lr"] for row in whole.history]  # the schedule over 2.5 epochs' time, ending annealed
    assert [row["lr"] for row in result.history] == pytest.approx(lrs) and lrs[-1] < 0.1 * cfg.train.lr


def test_a_budget_shorter_than_an_epoch_stops_inside_it_with_the_schedule_annealed(tmp_path, monkeypatch):
    """Cosine ends at its floor where the budget stops the run, inside the first epoch (OneCycle's:
    test_a_slow_start_does_not_end_the_schedule_before_the_budget)."""
    over = {"train.epochs": 3, "train.scheduler": "cosine", "train.batch_size": 4}
    cfg, prepared, clock, val_ds = _on_ticking_clock(tmp_path, monkeypatch, over)
    half = cfg.model_copy(update={"train": cfg.train.model_copy(update={"time_budget_min": len(clock) / 120})})
    result = fit(half, clock, val_ds, prepared.classes, tmp_path / "run")
    assert result.stopped_early and result.epochs_run == 1 and clock.now <= 0.5 * len(clock) + 4  # one batch over
    assert Path(result.best_checkpoint).exists() and result.history[0]["lr"] < 0.1 * cfg.train.lr


def _simulated_run(kind: str, seconds: float, step_s, planned: int = 10_000) -> tuple[list[float], float]:
    """A run's rates on a simulated clock: `step_s(done)` seconds per optimizer step; (rates, seconds used)."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched, budget = Schedule(opt, kind, 0.1, planned, seconds), Budget(seconds / 60, planned, 0.0, 0.0)
    rates, done, elapsed = [], 0, 0.0
    while done < planned and not budget.ends(done, elapsed):
        rates.append(opt.param_groups[0]["lr"])  # the rate this step trains at
        done, elapsed = done + 1, elapsed + step_s(done)
        sched.at(done, elapsed)
    return rates, elapsed


@pytest.mark.parametrize("kind", ["cosine", "onecycle"])
def test_a_slow_start_does_not_end_the_schedule_before_the_budget(kind):
    """The first 50 steps take 2 s (a busy machine), the rest 0.25 s: the run trains until its 120 s are spent,
    peaks once (OneCycle) and ends annealed; an estimate from the slow start would have fitted ~60 steps."""
    rates, used = _simulated_run(kind, 120.0, lambda done: 2.0 if done < 50 else 0.25)
    peak = rates.index(max(rates))
    assert used >= 120.0 and len(rates) == 50 + 80 + 1  # 100 s at the slow rate, 20 s at the fast one, one over
    assert max(rates) == pytest.approx(0.1, rel=0.02) and rates[-1] < 1e-3
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1 :], strict=False))  # no jump back up
    assert kind == "cosine" or peak == 18  # warm-up: 30% of the time (36 of 120 s, 18 slow steps), not of steps


@pytest.mark.parametrize("kind", ["cosine", "onecycle"])
def test_a_budget_that_holds_every_step_leaves_the_schedule_on_its_steps(kind):
    """Planned steps that fit in the budget: the rate follows the steps alone, as torch's schedulers do (OneCycle's
    phases end a step apart from torch's, whose warm-up ends at step 0.3 * total - 1)."""
    rates, used = _simulated_run(kind, 1e6, lambda done: 1.0, planned=100)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    if kind == "cosine":
        torch_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    else:
        torch_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=101)
    expected = []
    for _ in range(100):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        torch_sched.step()
    assert len(rates) == 100 and used == 100.0
    assert rates == pytest.approx(expected, rel=1e-6 if kind == "cosine" else 0.05, abs=1e-4)


def test_the_schedule_sets_adams_momentum_with_onecycle():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = Schedule(opt, "onecycle", 0.1, planned=100)
    assert opt.param_groups[0]["betas"][0] == pytest.approx(0.95)
    sched.at(30, 0.0)
    assert opt.param_groups[0]["betas"] == pytest.approx((0.85, 0.999))


@pytest.mark.parametrize("scheduler", ["onecycle", "plateau"])
def test_schedulers_and_label_smoothing_train_and_resume(tmp_path, scheduler):
    over = {
        "train.scheduler": scheduler,
        "train.label_smoothing": 0.1,
        "train.class_weights": "balanced",
        "train.grad_clip": 1.0,
        "train.epochs": 1,
    }
    cfg = load_config("demo", tiny_overrides(tmp_path, **over))
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    train_ds, val_ds = datasets(cfg, prepared)
    fit(cfg, train_ds, val_ds, prepared.classes, tmp_path / "run")
    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    # the scheduler state must round-trip through a weights-only checkpoint
    assert fit(longer, train_ds, val_ds, prepared.classes, tmp_path / "run").resumed_from == 1


def test_balanced_class_weights_favour_the_rare_class():
    w = class_weights(np.array([0, 0, 0, 1]), 2)
    assert torch.allclose(w, torch.tensor([4 / 6, 2.0]))


@pytest.mark.parametrize("mode", ["sqrt", "effective"])
def test_gentler_class_weights_favour_the_rare_class_less_steeply_than_balanced(mode):
    targets = np.array([0] * 2500 + [1] * 83)
    w, balanced = class_weights(targets, 2, mode), class_weights(targets, 2)
    assert 1 < w[1] / w[0] < balanced[1] / balanced[0]
    assert float((w[torch.as_tensor(targets)]).mean()) == pytest.approx(1.0)  # the average sample weighs 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_amp_training(tmp_path):
    cfg = load_config("demo", tiny_overrides(tmp_path, **{"train.device": "cuda", "train.amp": True}))
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    train_ds, val_ds = datasets(cfg, prepared)
    result = fit(cfg, train_ds, val_ds, prepared.classes, tmp_path / "run")
    assert result.device.startswith("cuda") and np.isfinite(result.history[-1]["train_loss"])


def test_ema_checkpoints_the_average_and_resumes_it(tmp_path):
    cfg = load_config("demo", tiny_overrides(tmp_path, **{"train.ema": 0.9, "train.epochs": 1}))
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    train_ds, val_ds = datasets(cfg, prepared)
    fit(cfg, train_ds, val_ds, prepared.classes, tmp_path / "run")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    name = next(k for k in last["model"] if k.endswith("weight") and last["model"][k].dtype == torch.float32)
    averaged = last["ema"][f"module.{name}"]
    assert torch.equal(best["model"][name], averaged)  # the best checkpoint holds the average ...
    assert not torch.equal(last["model"][name], averaged)  # ... which is not the last step's weights
    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    result = fit(longer, train_ds, val_ds, prepared.classes, tmp_path / "run")
    assert result.resumed_from == 1 and load_checkpoint(tmp_path / "run" / "last.pt")["ema"]["n_averaged"] > 1
