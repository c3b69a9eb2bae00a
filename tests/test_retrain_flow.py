"""The retrain flow on generated data, in-process (ephemeral Prefect) and through its command line."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.retrain import GateFailed, retrain
from ml.registry.storage import open_store
from ml.registry.versions import Registry
from ml.training.checkpoint import load_checkpoint
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent


def _artifact_keys(keys: list[str]) -> set[str]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    return {a.key for a in found}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_retrain_publishes_promotes_and_a_failed_gate_does_not(tmp_path):
    over = tiny_overrides(tmp_path)
    summary = retrain("demo", over)
    registry = Registry(open_store(over["storage.uri"]))
    assert summary["promoted"] and registry.versions("demo") == [summary["version"]]
    assert registry.get_alias("demo", "production")["version"] == summary["version"]
    meta = registry.metadata("demo", summary["version"])
    assert meta["config"]["train"]["epochs"] == 2  # the resolved config travels with the version
    assert meta["dataset"]["fingerprint"] and meta["onnx_sha256"] and "git_commit" in meta
    assert meta["metrics"]["accuracy"] == summary["metrics"]["accuracy"]
    assert {"reference.parquet", "projection.npz"} <= set(meta["files"])  # what flows.monitor compares with
    assert {"demo-metrics", "demo-summary"} <= _artifact_keys(["demo-metrics", "demo-summary"])

    state = retrain("demo", {**over, "gate.min": {"accuracy": 1.01}}, return_state=True)
    assert state.is_failed()
    err = state.result(raise_on_failure=False)
    assert isinstance(err, GateFailed) and "accuracy >= 1.01" in str(err)
    kept = pickle.loads(pickle.dumps(err))  # as Prefect persists a failed run's exception
    assert str(kept) == str(err) and kept.summary == err.summary
    assert len(registry.versions("demo")) == 2  # the candidate is kept for inspection...
    assert registry.get_alias("demo", "production")["version"] == summary["version"]  # ...but not promoted


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "flows.retrain", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def _sets(overrides: dict) -> list[str]:
    sets = [f"{k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in overrides.items()]
    return ["--preset", "demo", *[a for s in sets for a in ("--set", s)]]


def _summary(out: subprocess.CompletedProcess) -> dict:
    """The JSON last line of a run that exited 0."""
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _epoch_saved(runs: Path, proc: subprocess.Popen, timeout_s: float = 240) -> int:
    """The epoch of the first last.pt under runs/ that holds epoch 2 or later (polled as the process trains)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        for last in runs.glob("*/*/last.pt"):
            if (epoch := load_checkpoint(last)["epoch"]) >= 2:
                return epoch
        time.sleep(0.05)
    raise AssertionError(f"no epoch-2 checkpoint under {runs} (exit code {proc.poll()})")


@pytest.mark.slow
def test_a_retrain_killed_mid_training_resumes_in_a_new_process(tmp_path):
    over = tiny_overrides(tmp_path, **{"train.epochs": 6, "data.synthetic.per_class": 24})
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.retrain", *_sets(over)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the ephemeral Prefect server dies with it
    )
    try:
        killed_after = _epoch_saved(tmp_path / "runs", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    resumed = _summary(_cli(*_sets(over)))["training"]
    assert killed_after <= resumed["resumed_from"] < 6 and resumed["epochs_run"] == 6  # at most one epoch lost
    assert resumed["run_folder"].startswith("resuming ")  # a changed config starts fresh: tests/test_train.py


def test_cli_rejects_a_bad_key_before_any_work(tmp_path):
    out = _cli("--preset", "demo", "--set", "train.epochz=2", "--set", f"storage.workdir={tmp_path}/runs")
    assert out.returncode == 2
    assert "epochz" in out.stderr and "Extra inputs are not permitted" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_rejects_an_unknown_model_before_any_flow_run(tmp_path):
    out = _cli("--preset", "demo", "--set", "model.name=resnet18x", "--set", f"storage.workdir={tmp_path}/runs")
    assert out.returncode == 2
    assert "unknown model 'resnet18x'" in out.stderr and "close names: ['resnet18'," in out.stderr
    assert not (tmp_path / "runs").exists() and "Beginning flow run" not in out.stdout + out.stderr


@pytest.mark.slow
def test_cli_last_line_is_a_json_summary(tmp_path):
    summary = _summary(_cli(*_sets(tiny_overrides(tmp_path)), "--store", f"file://{tmp_path}/s3"))
    assert summary["promoted"] and summary["store"] == f"file://{tmp_path}/s3"
    assert Path(summary["version_uri"].removeprefix("file://"), "model.onnx").is_file()
