"""Shared fixtures: isolated Prefect home, the demo preset shrunk to a few seconds of CPU."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Before anything imports prefect: never share the user's Prefect database or send analytics.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="visionflow-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)  # after the harness has stopped
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
# ml/ loggers log outside flows too (tests call ml functions directly): not a reason to warn (warnings are errors)
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"

import pytest  # noqa: E402

from ml.config.run import RunConfig, load_config  # noqa: E402


def _in_tmp(tmp: Path) -> dict:
    """What every shrunk test run shares: data, runs and store under `tmp`, no progress bar, no gate minimums."""
    return {
        "data.root": str(tmp / "data"),
        "train.progress": False,
        "storage.workdir": str(tmp / "runs"),
        "storage.uri": f"file://{tmp / 'store'}",
        "gate.min": {},
    }


def tiny_overrides(tmp: Path, **extra) -> dict:
    """The demo preset, shrunk: few images, 2 epochs, tmp paths, no progress bar."""
    shrunk = {"data.synthetic.per_class": 12, "train.epochs": 2, "train.batch_size": 16}
    shrunk["gate.champion.min_images"] = 5  # ~10 validation images, not the 20 a real comparison wants
    return {**_in_tmp(tmp), **shrunk, **extra}


def tiny_seg_overrides(tmp: Path, **extra) -> dict:
    """The demo-seg preset, shrunk: pages of ~96 px, 64 px crops and tiles, 1 epoch, tmp paths."""
    shrunk = {
        "data.synthetic.per_class": 6,
        "data.synthetic.size": 96,
        "data.crop_size": 64,
        "data.crops_per_image": 2,
        "eval.tile": 64,
        "train.epochs": 1,
        "train.batch_size": 4,
        "gate.champion.min_images": 1,
    }
    return {**_in_tmp(tmp), **shrunk, **extra}


# The longest files (minutes each: real servers, several flow runs), collected first: under `make test`'s two
# processes they then run beside the short ones instead of one finishing alone at the end.
LONGEST_FIRST = ("test_soak.py", "test_deployments.py", "test_label_studio.py", "test_retrain_flow.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> RunConfig:
    return load_config("demo", tiny_overrides(tmp_path))


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the flow tests, stopped inside the session (not at interpreter exit)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.integration)])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Parametrised over both stores: ``file://<tmp>/store``, or ``s3://<fresh bucket>/prefix`` on moto reached
    through AWS_ENDPOINT_URL_S3 (the test module imports tests.s3_servers' aws_env and moto_server fixtures)."""
    if request.param == "file":
        return f"file://{tmp_path}/store"
    request.getfixturevalue("aws_env")
    server = request.getfixturevalue("moto_server")
    bucket = f"vf-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)  # boto3's own env handling
    return f"s3://{bucket}/prefix"


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: records every POST; answers `fail_with` to the first `failures` of them."""

    url: str
    posts: list[tuple[str, dict]] = field(default_factory=list)
    failures: int = 0
    fail_with: int = 500

    def wait_for(self, n: int, timeout: float = 30.0) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.posts

    def texts(self, path: str = "") -> list[str]:
        return [body["text"] for p, body in self.posts if p.startswith(path)]


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A Receiver listening on a free loopback port until exit."""
    state = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if state.failures > 0:
                state.failures -= 1
                self.send_response(state.fail_with)
            else:
                state.posts.append((self.path, body))
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as state:
        yield state
