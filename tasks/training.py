"""Training tasks: the run folder (keyed by split and training config, so a new process resumes a dead one's
training), and training itself: it holds slots of the machine's training limit (one on CPU: trainings sharing a
machine queue) and on CUDA GPUs no other run holds (tasks.gpus); a retry of a transient failure resumes from the
run's last checkpoint."""

from __future__ import annotations

from pathlib import Path

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from ml.config.run import RunConfig
from ml.data.prepare import PreparedData
from ml.training.loop import TrainResult
from ml.training.run_dirs import RunDir, claim_run_dir
from ml.training.step import train_step
from tasks.gpus import training_slots

REPEATS = (ValueError, TypeError, LookupError, AttributeError, NotImplementedError, FileNotFoundError)


def transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect's retry_condition_fn for training: retry what may pass on a second try (a full disk or lost mount,
    CUDA out of memory, a DDP rank killed); not what fails the same way after the delay: config and data errors
    (ValueError, so DatasetError and pydantic's ValidationError), a missing file, a bug."""
    return not isinstance(state.result(raise_on_failure=False), REPEATS)


@task(name="run-folder", cache_policy=NO_CACHE)
def run_folder(cfg: RunConfig, prepared: PreparedData, scratch: Path) -> RunDir:
    """`<workdir>/<model>/<split id>-<config hash>/`, with the split validated into `scratch` moved in."""
    return claim_run_dir(cfg, prepared, scratch)


@task(name="train", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=30, retry_condition_fn=transient)
def train_model(cfg: RunConfig, prepared: PreparedData, run_dir: Path) -> TrainResult:
    """A retry reuses run_dir, so it continues after the last finished epoch (train.resume) instead of epoch 1."""
    with training_slots(cfg) as placed:
        return train_step(placed, prepared, run_dir)
