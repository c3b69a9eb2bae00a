"""train.devices > 1: data-parallel training (DDP) in spawned processes, here two CPU ranks over gloo, the same code
path that runs one rank per GPU over NCCL."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ml.config.run import load_config
from ml.data.prepare import prepare_dataset
from ml.evaluation.classifier import evaluate_classifier
from ml.training.checkpoint import load_checkpoint
from ml.training.step import train_step
from tests.conftest import tiny_overrides, tiny_seg_overrides
from tests.test_map_head import map_cfg, write_blob_tiles

pytestmark = pytest.mark.slow


def test_two_ranks_train_one_map_model_with_the_weighted_sampler_and_mixup(tmp_path):
    write_blob_tiles(tmp_path / "tiles")
    cfg = map_cfg(tmp_path, **{"train.devices": 2, "train.sampler": "weighted", "train.mixup": 0.2})
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    trained = train_step(cfg, prepared, tmp_path / "run")
    assert trained.device == "cpu x2" and len(trained.history) == cfg.train.epochs
    metrics = evaluate_classifier(cfg, prepared, trained, tmp_path / "run").metrics
    assert metrics["auroc"] > 0.9 and metrics["macro_f1"] > 0.8, metrics  # the bar one process meets


def test_ranks_stop_after_the_same_epoch_and_resume_together(tmp_path):
    """A budget spent after the first epoch ends every rank there (they follow rank 0's clock: one that went on
    would wait for the others forever); a second call on the same run directory resumes on both from last.pt.
    Every run also checks at its end that the ranks hold the same weights (ml.training.ranks.check_in_sync)."""
    over = tiny_overrides(tmp_path, **{"train.devices": 2, "train.epochs": 3, "train.time_budget_min": 1e-4})
    cfg = load_config("demo", over)
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    first = train_step(cfg, prepared, tmp_path / "run")
    assert first.epochs_run == 1 and first.stopped_early

    cfg = load_config("demo", {**over, "train.time_budget_min": None})
    again = train_step(cfg, prepared, tmp_path / "run")
    assert again.resumed_from == 1 and [h["epoch"] for h in again.history] == [1, 2, 3]
    assert load_checkpoint(Path(again.last_checkpoint))["epoch"] == 3
    assert all(np.isfinite(h["train_loss"]) for h in again.history)


def test_a_unet_whose_deepest_encoder_stages_go_unused_trains_on_two_ranks(tmp_path):
    cfg = load_config("demo-seg", tiny_seg_overrides(tmp_path, **{"train.devices": 2}))
    trained = train_step(cfg, prepare_dataset(cfg.data, tmp_path / "prep"), tmp_path / "run")
    assert trained.device == "cpu x2" and np.isfinite(trained.history[0]["val_f1"])


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpus_train_one_model_over_nccl_with_amp(tmp_path):
    over = tiny_overrides(tmp_path, **{"train.device": "cuda", "train.devices": 2, "train.amp": True})
    cfg = load_config("demo", over)
    trained = train_step(cfg, prepare_dataset(cfg.data, tmp_path / "prep"), tmp_path / "run")
    assert trained.device == "cuda x2" and all(np.isfinite(h["train_loss"]) for h in trained.history)
