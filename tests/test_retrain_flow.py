"""The retrain flow on generated data, in-process (ephemeral Prefect) and through its command line."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.retrain import GateFailed, retrain
from ml.registry.storage import open_store
from ml.registry.versions import Registry
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


def test_cli_rejects_a_bad_key_before_any_work(tmp_path):
    out = _cli("--preset", "demo", "--set", "train.epochz=2", "--set", f"storage.workdir={tmp_path}/runs")
    assert out.returncode == 2
    assert "epochz" in out.stderr and "Extra inputs are not permitted" in out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_cli_last_line_is_a_json_summary(tmp_path):
    sets = [f"{k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in tiny_overrides(tmp_path).items()]
    out = _cli("--preset", "demo", *[a for s in sets for a in ("--set", s)], "--store", f"file://{tmp_path}/s3")
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["promoted"] and summary["store"] == f"file://{tmp_path}/s3"
    assert Path(summary["version_uri"].removeprefix("file://"), "model.onnx").is_file()
