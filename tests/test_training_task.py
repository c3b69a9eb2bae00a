"""The train task under real Prefect: a retry after a transient failure mid-training continues from the last
checkpoint; a data or config error is not retried."""

import errno
from pathlib import Path

import pytest
import torch
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

import ml.training.loop
from ml.data.errors import DatasetError
from ml.data.prepare import prepare_dataset
from tasks.gpus import TRAINING_LIMIT, on_gpus
from tasks.training import train_model


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_retry_resumes_after_the_last_finished_epoch(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg  # 2 epochs
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    run_dir = tmp_path / "run"

    # A full disk while epoch 2's checkpoint is written, once: the task fails, last.pt still holds epoch 1.
    real_save, failed = ml.training.loop.save_checkpoint, []

    def disk_full_once(state, path):
        if state["epoch"] == 2 and not failed:
            failed.append(path.name)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(state, path)

    monkeypatch.setattr(ml.training.loop, "save_checkpoint", disk_full_once)

    @flow
    def train_flow():
        # the task's own retries=1; no delay in tests
        return train_model.with_options(retry_delay_seconds=0)(cfg, prepared, run_dir)

    result = train_flow()
    assert failed, "the injected failure never happened"
    assert result.resumed_from == 1  # the retry loaded epoch 1's checkpoint ...
    assert [h["epoch"] for h in result.history] == [1, 2]  # ... and ran only epoch 2 again
    assert result.epochs_run == 2


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_data_error_in_training_is_not_retried(tiny_cfg, tmp_path):
    prepared = prepare_dataset(tiny_cfg.data, tmp_path / "prep")
    broken = Path(prepared.split_csv).read_text().splitlines()[1].split(",")[0]
    Path(broken).write_bytes(b"not a png")  # broken after validation: training cannot decode it, twice alike
    seen = {}

    @flow
    def train_flow():
        state = train_model.with_options(retry_delay_seconds=0)(tiny_cfg, prepared, tmp_path / "run", return_state=True)
        seen["error"], seen["task_run"] = state.result(raise_on_failure=False), state.state_details.task_run_id

    train_flow()
    assert isinstance(seen["error"], DatasetError) and broken in str(seen["error"])
    with get_client(sync_client=True) as client:
        assert client.read_task_run(seen["task_run"]).run_count == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.usefixtures("prefect_harness")
def test_cuda_work_holds_a_training_slot_and_a_claimed_gpu(tiny_cfg):
    cfg = tiny_cfg.model_copy(update={"train": tiny_cfg.train.model_copy(update={"device": "cuda"})})

    @flow
    def on_one_gpu() -> tuple[int, list[int]]:
        with on_gpus(cfg, 1) as placed, get_client(sync_client=True) as client:
            return client.read_global_concurrency_limit_by_name(TRAINING_LIMIT).active_slots, placed.train.gpus

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=TRAINING_LIMIT, limit=1))
        try:
            slots, gpus = on_one_gpu()
            assert slots == 1 and len(gpus) == 1 and cfg.train.gpus is None
            assert client.read_global_concurrency_limit_by_name(TRAINING_LIMIT).active_slots == 0
        finally:
            client.delete_global_concurrency_limit_by_name(TRAINING_LIMIT)
