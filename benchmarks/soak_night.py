"""One simulated night of benchmarks/soak.py: the retrain deployment on the worker (with tonight's fault), then
scoring, the monitor, a labeling batch the annotator labels, retention; and what the night left behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psutil

from benchmarks.soak_world import World, disk_mb
from ml.evaluation.stats import paired_bootstrap, resampled_metric
from ml.registry.holdout import evaluate_version
from ml.registry.storage import open_store
from ml.registry.versions import Registry
from ml.training.checkpoint import load_checkpoint
from tests.conftest import Receiver
from tests.prefect_server import FINAL, REPO, Server
from tests.s3_servers import S3Server, StallingProxy, rclone_serving

MODEL = "demo"
STORE = "s3://bucket/store"
EPOCHS = 6  # 3 left the candidate under-fit and noisy: a quiet night failed the champion rule by more than noise
ARRIVALS_PER_CLASS = 10  # 40 new images a night: above the monitor's min_rows (30)
LABEL_BUDGET = 12
RUN_TIMEOUT_S = 420
# the request line of publish's report.md upload: after model.onnx, before metadata.json (the version's commit point)
PUBLISH_UPLOAD = re.compile(rb"PUT \S*/versions/\S*/report\.md[ ?]")


@dataclass
class Night:
    night: int
    fault: str | None
    states: list[str] = field(default_factory=list)  # tonight's retrain runs, in order (a retrigger after a fault)
    resumed_from: int | None = None
    epochs_lost: int | None = None  # kill night: epochs finished before the kill minus the epoch resumed after
    promoted: bool = False
    alerts: int = 0
    runs_mb: float = 0.0
    store_mb: float = 0.0
    disk_mb: float = 0.0
    production: str | None = None
    production_ok: bool = True
    test_accuracy: float | None = None
    accuracy_change_ci: tuple[float, float] | None = None  # a promotion's paired 95% interval vs the last production
    fail_s: float | None = None  # stall night: the stalled run's start to its failure
    labeled: int = 0
    seconds: float = 0.0


class Nights:
    """The soak's running services and what one night does with them."""

    def __init__(
        self,
        world: World,
        server: Server,
        env: dict[str, str],
        receiver: Receiver,
        s3: S3Server,
        stack: ExitStack,
        worker: subprocess.Popen,
        root: Path,
    ):
        self.world, self.server, self.env, self.receiver, self.s3, self.worker, self.root = (
            world,
            server,
            env,
            receiver,
            s3,
            worker,
            root,
        )
        self.s3_stack = ExitStack()  # the S3 server lives here, so a fault can stop and restart it
        stack.callback(self.s3_stack.close)
        self.deployment = server.api.get(f"/deployments/name/retrain/{MODEL}").raise_for_status().json()["id"]
        self.prev_production: str | None = None
        self.prev_rows: list[dict] | None = None  # the last production's per-image test predictions

    # --- the store -------------------------------------------------------------------------------------------
    def store(self):
        return open_store(STORE, self.s3.endpoint)

    def overrides(self, endpoint: str | None = None) -> dict[str, Any]:
        """The demo preset shrunk to seconds, on the soak's data and S3 store, with short S3 timeouts."""
        return {
            "data.root": str(self.world.data),
            "storage.workdir": str(self.root / "runs"),
            "storage.uri": STORE,
            "storage.endpoint_url": endpoint or self.s3.endpoint,
            "storage.connect_timeout_s": 1.0,
            "storage.read_timeout_s": 3.0,
            "storage.max_attempts": 2,
            "train.epochs": EPOCHS,
            "train.device": "cpu",
            "train.progress": False,
            "gate.min": {},
            "gate.champion.min_images": 5,
            "retention.published_runs_hours": 0,
            "retention.keep_history": 2,
            "retention.unpromoted_days": 0,
            "retention.incomplete_hours": 0.01,
            "retention.reports_keep": 3,  # a soak night is minutes: the 90-day age rule never fires
        }

    def restart_s3(self) -> None:
        self.s3_stack.close()
        addr = urlparse(self.s3.endpoint).netloc
        self.s3_stack = ExitStack()
        self.s3 = self.s3_stack.enter_context(rclone_serving(self.root / "s3", addr))

    # --- flow runs ---------------------------------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs) -> Any:
        """One call to the server, retried for up to 2 min while it answers 5xx or not at all: the SQLite server
        under load stalls and once answered 503 to create_flow_run (the worker's client retries alike)."""
        deadline = time.monotonic() + 120
        while True:
            try:
                response = self.server.api.request(method, path, **kwargs)
                if response.status_code < 500 or time.monotonic() > deadline:
                    return response.raise_for_status().json()
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(2)

    def trigger(self, overrides: dict[str, Any]) -> str:
        body = {"parameters": {"preset": MODEL, "overrides": overrides}}
        return self.api("POST", f"/deployments/{self.deployment}/create_flow_run", json=body)["id"]

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/flow_runs/{run_id}")

    def wait(self, run_id: str, poll=None) -> dict[str, Any]:
        """Until the run is final; `poll()` is called every 0.3 s meanwhile (a fault's trigger)."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while (run := self.flow_run(run_id))["state"]["type"] not in FINAL and time.monotonic() < deadline:
            if poll:
                poll(run_id)
            time.sleep(0.3)
        return run

    def logs(self, run_id: str) -> list[str]:
        """Every log line of the run (the API answers a page at a time)."""
        flt, found = {"logs": {"flow_run_id": {"any_": [run_id]}}}, []
        while page := self.api("POST", "/logs/filter", json=flt | {"offset": len(found)}):
            found += [log["message"] for log in page]
        return found

    def cli(self, module: str, *args: str) -> dict[str, Any]:
        """python -m <module> ... against the server and store; its last stdout line (the JSON summary)."""
        cmd = [sys.executable, "-m", module, "--model", MODEL, "--store", STORE, "--endpoint-url", self.s3.endpoint]
        cmd += ["--cache-dir", str(self.root / "cache"), *args]
        done = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=300)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"{module} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return json.loads(lines[-1])

    # --- faults ------------------------------------------------------------------------------------------------
    def kill_flow_process(self, t0: float):
        """Once an epoch is saved (last.pt newer than the trigger): SIGKILL the worker's flow process(es)."""
        killed: dict[str, int] = {}

        def poll(run_id: str) -> None:
            if killed:
                return
            for last in (self.root / "runs" / MODEL).glob("*/last.pt"):
                if last.stat().st_mtime > t0:
                    for child in psutil.Process(self.worker.pid).children(recursive=True):
                        with contextlib.suppress(psutil.NoSuchProcess):
                            child.kill()
                    time.sleep(0.5)
                    killed["epochs"] = load_checkpoint(last)["epoch"]
                    return

        return poll, killed

    def killed_at_publish(self) -> StallingProxy:
        """A proxy to the S3 server that SIGKILLs it mid-publish: at the upload of the version's report.md, when its
        model.onnx is stored and its metadata.json is not."""
        server = self.s3

        def kill() -> None:
            os.kill(server.pid, signal.SIGKILL)

        return StallingProxy(("127.0.0.1", urlparse(server.endpoint).port), (PUBLISH_UPLOAD, kill))

    # --- the night ---------------------------------------------------------------------------------------------
    def retrain(self, n: Night) -> dict[str, Any]:
        """Tonight's retrain with its fault; after a fault that stops the run, the operator retriggers it once."""
        t0 = time.time()
        if n.fault == "stall":
            proxy = StallingProxy(("127.0.0.1", urlparse(self.s3.endpoint).port))
            proxy.stall()
            run = self.wait(self.trigger(self.overrides(proxy.endpoint)))
            proxy.close()
            start, end = (datetime.fromisoformat(run[k]) for k in ("start_time", "end_time"))
            n.fail_s = round((end - start).total_seconds(), 1)
        elif n.fault == "kill":
            poll, killed = self.kill_flow_process(t0)
            run = self.wait(self.trigger(self.overrides()), poll)
            n.epochs_lost = killed.get("epochs")
        elif n.fault == "s3-kill":
            proxy = self.killed_at_publish()
            run = self.wait(self.trigger(self.overrides(proxy.endpoint)))
            proxy.close()
            self.restart_s3()
        else:
            return self.wait(self.trigger(self.overrides()))
        n.states.append(run["state"]["type"])
        run = self.wait(self.trigger(self.overrides()))
        for line in self.logs(run["id"]):
            if line.startswith("resuming "):
                n.resumed_from = int(line.split(" after epoch ")[1].split()[0])
        if n.epochs_lost is not None and n.resumed_from is not None:
            n.epochs_lost -= n.resumed_from
        return run

    def night(self, number: int, fault: str | None) -> Night:
        start = time.monotonic()
        n = Night(number, fault)
        alerts_before = len(self.receiver.posts)
        tonight = self.world.arrive(number, ARRIVALS_PER_CLASS, drifted=fault == "drift")
        bad = []
        if fault == "corrupt":
            bad = self.world.corrupt_batch(number, 4)
        elif fault == "mislabel":
            bad = self.world.mislabelled_batch(number, 15)
        run = self.retrain(n)
        n.states.append(run["state"]["type"])
        for path in bad:  # the operator, after the alert: the bad delivery goes back to its sender
            path.unlink()
        production = Registry(self.store()).get_alias(MODEL, "production")
        if production is not None:
            # a night is a day: the 1-day window holds tonight's predictions only
            store = self.store()
            for key in store.list(f"monitoring/{MODEL}/predictions/"):
                store.delete(key)
            self.cli("flows.score", "--source", str(tonight))
            self.cli("flows.monitor", "--window", "1d")
            batch = self.cli("flows.select_for_labeling", "--pool", str(self.world.pool), "--budget", str(LABEL_BUDGET))
            if batch["selected"]:
                n.labeled = self.world.annotate(store, f"labeling/{MODEL}/{batch['batch']}")
        subprocess.run(
            [sys.executable, "-m", "flows.gc", "--preset", MODEL, "--cache-dir", str(self.root / "cache")]
            + [f"--set={k}={json.dumps(v)}" for k, v in self.overrides().items()],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            check=True,
            timeout=300,
        )
        self.settle(alerts_before, wait_s=20 if fault else 5)
        n.alerts = len(self.receiver.posts) - alerts_before
        self.measure(n)
        n.seconds = round(time.monotonic() - start, 1)
        return n

    def settle(self, before: int, wait_s: float) -> None:
        """Wait for the automations' messages: until `wait_s` passed with no new one (at most 60 s)."""
        deadline, seen, quiet_since = time.monotonic() + 60, len(self.receiver.posts), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < wait_s:
            if len(self.receiver.posts) != seen:
                seen, quiet_since = len(self.receiver.posts), time.monotonic()
            time.sleep(0.5)

    def measure(self, n: Night) -> None:
        """Disk, production, and production's accuracy on the fixed test set; production must be a listed
        (complete) version, a new one only from a completed run, and never less accurate than the last."""
        n.runs_mb = disk_mb(self.root / "runs")
        n.store_mb = disk_mb(self.root / "s3" / "data")
        n.disk_mb = round(n.runs_mb + n.store_mb, 3)
        registry = Registry(self.store())
        alias = registry.get_alias(MODEL, "production")
        n.production = alias["version"] if alias else None
        if n.production is None:
            return
        n.promoted = n.production != self.prev_production
        workdir = self.root / "eval" / str(n.night)
        result = evaluate_version(registry, MODEL, n.production, self.world.test, workdir, rows=True)
        n.test_accuracy = round(result["metrics"]["accuracy"], 4)
        if self.prev_rows is not None and n.promoted:
            n.accuracy_change_ci = accuracy_change_ci(result["rows"], self.prev_rows)
        listed = n.production in registry.versions(MODEL)
        from_completed = not n.promoted or n.states[-1] == "COMPLETED"
        not_worse = n.accuracy_change_ci is None or n.accuracy_change_ci[1] >= 0
        n.production_ok = listed and from_completed and not_worse
        self.prev_production, self.prev_rows = n.production, result["rows"]


def accuracy_change_ci(rows: list[dict], before: list[dict]) -> tuple[float, float]:
    """95% paired-bootstrap interval of tonight's production accuracy minus the last one's on the fixed test set
    (the gate's own interval): below 0 throughout is a worse version; a point drop inside it is the test set's
    noise (two equally good versions differ by ~0.03 on 200 images)."""
    classes = 1 + max(r[k] for r in rows + before for k in ("target", "pred"))
    new, old = (resampled_metric(r, "accuracy", classes) for r in (rows, before))
    low, high = paired_bootstrap(new, old, len(rows), resamples=2000, confidence=0.95)
    return round(low, 4), round(high, 4)
