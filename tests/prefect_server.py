"""A real Prefect server and its processes, for tests/test_deployments.py and benchmarks/soak.py.

``serving(home)`` starts `make server` (SQLite under `home`) on a free loopback port and yields a ``Server``;
``started`` runs a long-lived process (a worker) in its own session, ``run`` a command to completion. Everything
started here is stopped on exit, even on failure: SIGINT to the process group, SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from ml.training.distributed import free_port

REPO = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).with_name("prefect"))
MAKE = ["make", "-s", "-o", ".venv/.installed"]  # never reinstall the venv from inside a test
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Server:
    url: str
    env: dict[str, str]  # for clients: PREFECT_API_URL points here
    api: httpx.Client


def kill_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGINT to the process and its children (its own session), SIGKILL to whatever is left after `grace`."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.wait()


@contextmanager
def started(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            kill_group(proc)


def run(cmd: list[str], env: dict[str, str], timeout: float = 180) -> str:
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc, grace=0)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-4000:]}"
    return out


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:]


@contextmanager
def serving(home: Path) -> Iterator[Server]:
    """`make server` on a free loopback port, with its own PREFECT_HOME (SQLite) at `home`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    url = f"http://127.0.0.1:{port}"
    log = home / "server.log"
    # timeout: a SQLite server under load stalls for seconds ("database is locked", retried inside the server);
    # httpx's 5 s default failed the soak's polling on one such stall
    api_client = httpx.Client(base_url=f"{url}/api", timeout=60)
    with started([*MAKE, "server", f"PORT={port}"], env, log) as proc, api_client as api:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"the server exited:\n{tail(log)}"
            assert time.monotonic() < deadline, f"no /api/health after 90 s:\n{tail(log)}"
            try:
                if api.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield Server(url, env | {"PREFECT_API_URL": f"{url}/api"}, api)
