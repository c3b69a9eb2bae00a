"""Alerts: the webhook message reaching a real local HTTP receiver, retries, a dead webhook, the crash hook,
and the Prefect automation of deployments/automations/ on a real Prefect server."""

from __future__ import annotations

import ast
import fnmatch
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect import flow

from flows.monitor import monitor
from flows.retrain import retrain
from ml.config.evaluation import ChampionConfig
from ml.config.production import AlertConfig
from ml.config.run import RunConfig, load_config
from ml.data.errors import DatasetError
from ml.evaluation.gate import ChampionEval, GateReport, RuleResult
from ml.monitoring.alerts import (
    DATA_INVALID,
    ENV_WEBHOOK,
    FLOW_CRASHED,
    GATE_FAILED,
    METRIC_REGRESSED,
    crash_alert,
    post_json,
    run_alerts,
    webhook_url,
)
from ml.monitoring.drift import DriftResult, LiveMetrics
from ml.monitoring.log import DRIFT_DETECTED, LIVE_METRIC_DROPPED, TOO_FEW_ROWS, MonitorCheck, monitor_alerts
from ml.training.distributed import free_port
from tasks.alerts import send_alerts
from tests.conftest import Receiver, tiny_overrides

ROOT = Path(__file__).resolve().parent.parent
AUTOMATION = ROOT / "deployments" / "automations" / "gate-failed.yaml"


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/hook"  # a port that was free a moment ago: nothing listens there


FAILED_GATE = GateReport([RuleResult("accuracy >= 1.01", 1.01, 0.5, False), RuleResult("loss <= 9", 9, 0.4, True)])
REGRESSED = ChampionEval("v0", {"accuracy": 0.5, "macro_f1": 0.5}, {"accuracy": 0.9, "macro_f1": 0.5}, 8)


def test_one_message_names_the_failed_rules_the_regression_and_the_run():
    alert = run_alerts("demo", "v1", FAILED_GATE, REGRESSED, ChampionConfig(), "http://ui/runs/flow-run/x")
    assert alert.event == GATE_FAILED and alert.extra["reasons"] == [GATE_FAILED, METRIC_REGRESSED]
    assert alert.resource == {"prefect.resource.id": "visionflow.model.demo", "prefect.resource.name": "demo"}
    text = alert.text()
    for part in (
        "*demo*: gate failed, not promoted; metrics regressed against production",
        "version: `v1`",
        "production: `v0`",
        "accuracy >= 1.01: measured 0.5",
        "accuracy regressed: 0.9000 -> 0.5000 (-0.4000)",
        "run: http://ui/runs/flow-run/x",
    ):
        assert part in text
    assert "loss" not in text and "macro_f1" not in text  # only the failed rules and the regressed metrics
    assert alert.payload()["extra"]["regressed"] == {"accuracy": {"production": 0.9, "candidate": 0.5}}
    passed = GateReport([RuleResult("loss <= 9", 9, 0.4, True)])
    regressed_only = run_alerts("demo", "v1", passed, REGRESSED, ChampionConfig(), None)
    assert (
        regressed_only.event == METRIC_REGRESSED
        and "*demo*: metrics regressed against production" in regressed_only.text()
    )
    assert run_alerts("demo", "v1", passed, ChampionEval(None, {"accuracy": 0.5}), ChampionConfig(), None) is None


def test_one_monitor_alert_names_drift_and_dropped_metrics():
    drift = DriftResult("drift", [{"group": "image", "column": "brightness", "method": "psi", "score": 0.4,
                                   "threshold": 0.2, "drifted": True}], {"image": True}, 100, 100)  # fmt: skip
    live = LiveMetrics(50, True, {"accuracy": 0.6}, {"accuracy": 0.9}, {"accuracy": -0.3}, 0.05)
    check = MonitorCheck("demo", "v1", "r1", "1d", "2026-01-01T00:00:00+00:00", 100, 0, drift, live, {})
    alert = monitor_alerts(check, None)
    assert alert.event == DRIFT_DETECTED and alert.extra["reasons"] == [DRIFT_DETECTED, LIVE_METRIC_DROPPED]
    text = alert.text()
    assert "drift over the last 1d (image); live metrics dropped over the last 1d" in text
    assert "image: brightness (psi 0.4, threshold 0.2)" in text and "accuracy: validation 0.9000 -> live" in text


def _emitted_events() -> set[str]:
    """Every `visionflow.<what>.<happened>` string constant in ml/, tasks/ and flows/: the events the code emits
    (resource ids are f-strings, `visionflow.model.{name}`, so they are not picked up)."""
    name = re.compile(r"visionflow\.[a-z_]+\.[a-z_]+")
    found = set()
    for folder in ("ml", "tasks", "flows"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and name.fullmatch(node.value):
                    found.add(node.value)
    return found


def _triggers(trigger: dict) -> Iterator[dict]:
    """An event trigger and those nested in compound/sequence triggers."""
    yield trigger
    for inner in trigger.get("triggers", []):
        yield from _triggers(inner)


def _routes() -> list[tuple[str, list[str], str]]:
    """(file, expected event patterns, resource id pattern) of every trigger that calls a webhook, from every
    automation file (one automation, a list, or {automations: [...]}, as `make deploy` reads them)."""
    routes = []
    for path in sorted((ROOT / "deployments" / "automations").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        doc = doc.get("automations", doc) if isinstance(doc, dict) else doc
        for automation in doc if isinstance(doc, list) else [doc]:
            if not any(a["type"] == "call-webhook" for a in automation["actions"]) or not automation["enabled"]:
                continue
            for trigger in _triggers(automation["trigger"]):
                resource = trigger.get("match", {}).get("prefect.resource.id", "*")
                routes.append((path.name, trigger.get("expect", []), resource))
    return routes


def test_every_emitted_event_is_routed_to_the_webhook_by_a_shipped_automation():
    emitted = _emitted_events()
    constants = {GATE_FAILED, METRIC_REGRESSED, FLOW_CRASHED, DATA_INVALID, DRIFT_DETECTED, LIVE_METRIC_DROPPED}
    assert constants | {TOO_FEW_ROWS} <= emitted  # the scan sees the constants it must
    resource = run_alerts("demo", "v1", FAILED_GATE, REGRESSED, ChampionConfig(), None).resource["prefect.resource.id"]
    routes = _routes()
    unrouted = {
        event
        for event in emitted
        if not any(
            fnmatch.fnmatchcase(event, pattern) and fnmatch.fnmatchcase(resource, match)
            for _, patterns, match in routes
            for pattern in patterns
        )
    }
    assert not unrouted, f"events no automation in deployments/automations/ sends to the webhook: {sorted(unrouted)}"


def test_webhook_is_retried_until_delivered(receiver: Receiver):
    receiver.failures = 2
    assert post_json(receiver.url + "/hook", {"text": "hi"}, attempts=3, backoff_s=0.01)
    assert receiver.posts == [("/hook", {"text": "hi"})]


def test_webhook_refusal_is_not_retried(receiver: Receiver, caplog: pytest.LogCaptureFixture):
    receiver.failures, receiver.fail_with = 5, 404
    with caplog.at_level(logging.WARNING, logger="ml.monitoring.alerts"):
        assert not post_json(receiver.url + "/secret-token", {"text": "hi"}, attempts=3, backoff_s=0.01)
    assert receiver.failures == 4  # one attempt only
    assert "HTTP 404" in caplog.text and "secret-token" not in caplog.text  # the URL's secret path is not logged


def test_dead_webhook_only_logs_a_warning(caplog: pytest.LogCaptureFixture):
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ml.monitoring.alerts"):
        assert not post_json(_dead_url(), {"text": "hi"}, attempts=3, timeout_s=1, backoff_s=0.05)
    assert time.monotonic() - start < 5
    assert "not delivered after 3 attempt(s)" in caplog.text and "Connection refused" in caplog.text


def test_webhook_url_from_config_then_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ENV_WEBHOOK, raising=False)
    assert webhook_url(AlertConfig()) is None
    monkeypatch.setenv(ENV_WEBHOOK, "https://hooks.example/env")
    assert webhook_url(AlertConfig()) == "https://hooks.example/env"
    assert webhook_url(AlertConfig(webhook_url="https://hooks.example/cfg")) == "https://hooks.example/cfg"
    cfg = load_config("demo", {"alerts.webhook_url": "https://hooks.example/secret"})
    assert "webhook_url" not in cfg.model_dump()["alerts"]  # a secret: not saved with the version's config


@flow
def _alerting_flow(cfg: RunConfig) -> list[str]:
    return send_alerts(cfg, "v1", FAILED_GATE, REGRESSED)


@pytest.mark.usefixtures("prefect_harness")
def test_flow_completes_when_the_webhook_is_down(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    cfg = load_config("demo", {"alerts.webhook_url": _dead_url(), "alerts.webhook_attempts": 2})
    with caplog.at_level(logging.WARNING, logger="ml.monitoring.alerts"):
        state = _alerting_flow(cfg, return_state=True)
    assert state.is_completed() and state.result() == [GATE_FAILED]
    assert caplog.text.count("not delivered after 2 attempt(s)") == 1


@pytest.mark.usefixtures("prefect_harness")
def test_a_failed_gate_that_also_regressed_sends_one_message(receiver: Receiver):
    cfg = load_config("demo", {"alerts.webhook_url": receiver.url + "/retrain"})
    assert _alerting_flow(cfg) == [GATE_FAILED]
    (text,) = receiver.texts("/retrain")
    assert "gate failed, not promoted; metrics regressed against production" in text
    assert "accuracy >= 1.01: measured 0.5" in text and "accuracy regressed: 0.9000 -> 0.5000" in text


@pytest.mark.usefixtures("prefect_harness")
def test_a_retrain_stopped_by_its_data_sends_a_data_alert(tmp_path: Path, receiver: Receiver):
    (tmp_path / "data").mkdir()  # exists, so nothing is generated: an empty dataset stops the run
    over = tiny_overrides(tmp_path, **{"alerts.webhook_url": receiver.url + "/crash"})
    state = retrain("demo", over, return_state=True)
    assert state.is_failed()
    (text,) = receiver.texts("/crash")
    assert "*demo*: data broke a validation rule, nothing trained" in text and "version: none published" in text
    assert str(tmp_path / "data") in text  # the error says what broke


def test_crash_alert_tells_bad_data_from_a_crash():
    assert crash_alert("demo", DatasetError("data/x.png: not an image"), None).event == DATA_INVALID
    crashed = crash_alert("demo", RuntimeError("CUDA out of memory"), None)
    assert crashed.event == FLOW_CRASHED and "retrain: RuntimeError: CUDA out of memory" in crashed.text()


@pytest.mark.usefixtures("prefect_harness")
def test_a_failing_monitor_alerts_too(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_WEBHOOK, receiver.url + "/monitor")  # the scoring-side flows have no preset
    store = f"file://{tmp_path / 'store'}"
    assert monitor("ghost", store, window="7 days", return_state=True).is_failed()  # a typo: no alert
    state = monitor("ghost", store, cache_dir=str(tmp_path / "cache"), return_state=True)
    assert state.is_failed()
    (text,) = receiver.texts("/monitor")
    assert "*ghost*: flow crashed" in text and "monitor: RegistryError" in text and "no versions at all" in text


# --- a real Prefect server: the automation of deployments/automations/ turns our events into a webhook call ----


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`prefect server start` with its own PREFECT_HOME; yields the environment of a client pointed at it."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "server-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).parent / "prefect")
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    client_env = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_HOME": str(tmp_path / "client")}
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/api/health", proc, log)
        yield client_env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"prefect server not healthy within {timeout}s: {log.read_text()[-2000:]}")


EMIT = """
import sys
from prefect import flow
from ml.config.run import load_config
from ml.evaluation.gate import ChampionEval, GateReport, RuleResult
from ml.monitoring.log import DRIFT_DETECTED, MonitorAlert
from tasks.alerts import dispatch, flow_run_url, send_alerts

@flow
def alerting(url: str) -> list[str]:
    gate = GateReport([RuleResult("accuracy >= 1.01", 1.01, 0.5, False)])
    champion = ChampionEval("v0", {"accuracy": 0.5}, {"accuracy": 0.9}, 8)
    cfg = load_config("demo", {"alerts.webhook_url": url})
    drift = MonitorAlert(DRIFT_DETECTED, "demo", "v0", ["image: brightness"], flow_run_url(), title="drift (image)")
    dispatch(drift, cfg.alerts)  # what the monitor flow sends
    return send_alerts(cfg, "v1", gate, champion)

print(alerting(sys.argv[1]))
"""


@pytest.mark.integration
@pytest.mark.slow
def test_automation_file_is_accepted_and_turns_events_into_a_webhook(
    prefect_server: dict[str, str], receiver: Receiver, tmp_path: Path
):
    def run(*cmd: str) -> str:
        out = subprocess.run(cmd, env=prefect_server, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    # the commands of the YAML's header, with allow_private_urls for a receiver on 127.0.0.1
    header = AUTOMATION.read_text()
    assert 'sed "s/WEBHOOK_BLOCK_ID/$ID/" deployments/automations/gate-failed.yaml' in header
    assert "prefect automation create --from-file /tmp/gate-failed.yaml" in header
    block_id = (
        run(
            sys.executable,
            "-c",
            (
                "from prefect.blocks.webhook import Webhook; print(Webhook(url='" + receiver.url + "/automation', "
                "headers={'Content-Type': 'application/json'}, allow_private_urls=True).save('visionflow-alerts'))"
            ),
        )
        .strip()
        .splitlines()[-1]
    )
    rendered = tmp_path / "gate-failed.yaml"
    rendered.write_text(header.replace("WEBHOOK_BLOCK_ID", block_id))
    created = run(str(Path(sys.executable).parent / "prefect"), "automation", "create", "--from-file", str(rendered))
    assert "Created automation 'visionflow-alerts'" in created

    run(sys.executable, "-c", EMIT, receiver.url + "/direct")  # a flow run on the server alerts twice
    receiver.wait_for(4, timeout=30)
    time.sleep(2)  # a doubled-up message would arrive meanwhile
    direct, via_automation = receiver.texts("/direct"), receiver.texts("/automation")
    assert len(direct) == 2 and sorted(via_automation) == sorted(direct)  # one message per alert, same both ways
    assert any("gate failed" in t and "regressed" in t for t in direct)  # the gate and the regression: one message
    assert any("drift (image)" in t for t in direct)
    assert all(f"run: {prefect_server['PREFECT_API_URL'].removesuffix('/api')}/runs/flow-run/" in t for t in direct)
