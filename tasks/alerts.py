"""Alert tasks: a Prefect event per alert (automations react to it), plus the webhook message of ml.monitoring.alerts.

Events, each about the resource `visionflow.model.<name>`, payload = ml.monitoring.alerts.Alert.payload() (model,
version, problems, run_url, extra.reasons, text): retrain's visionflow.gate.failed, visionflow.metric.regressed,
visionflow.data.invalid and visionflow.flow.crashed; the monitor's visionflow.drift.detected,
visionflow.live_metric.dropped and visionflow.monitor.too_few_rows. One event per run, naming all its reasons.
deployments/automations/gate-failed.yaml turns each into one webhook message on a Prefect server
(tests/test_alerts.py checks that it routes every event the code emits).
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.exceptions import ParameterTypeError
from prefect.runtime import flow_run as current_run
from prefect.utilities.urls import url_for

from ml.config.production import AlertConfig
from ml.config.run import RunConfig, load_config
from ml.evaluation.gate import ChampionEval, GateReport
from ml.monitoring.alerts import Alert, NotPromoted, crash_alert, deliver, run_alerts

log = logging.getLogger("ml.monitoring.alerts")  # forwarded to the run's logs (tasks/__init__.py)


def flow_run_url() -> str | None:
    """The current flow run's page in the Prefect UI (None without a UI URL, e.g. an ephemeral run)."""
    run_id = current_run.get_id()
    return url_for("flow-run", obj_id=run_id) if run_id else None


def dispatch(alert: Alert, cfg: AlertConfig) -> None:
    """Emit the Prefect event, then POST the webhook message; neither raises for an unreachable receiver."""
    emit_event(event=alert.event, resource=alert.resource, payload=alert.payload())
    deliver(alert, cfg)


@task(name="alert", cache_policy=NO_CACHE)
def send_alerts(cfg: RunConfig, version: str, gate: GateReport, champion: ChampionEval) -> list[str]:
    """A failed gate and/or metrics worse than production beyond champion.tolerance -> one alert naming them all
    (none for a gate that only held production against a candidate within noise)
    (ml.monitoring.alerts.run_alerts); returns the event sent ([] when nothing was wrong)."""
    alert = run_alerts(cfg.name, version, gate, champion, cfg.gate.champion, flow_run_url())
    if alert is None:
        return []
    dispatch(alert, cfg.alerts)
    return [alert.event]


def _alert_target(flow: str, params: dict[str, Any]) -> tuple[str, AlertConfig]:
    """The model a failed run was about, and where its alerts go."""
    if "model" in params:  # score, monitor, select-for-labeling: no preset to load
        return str(params["model"]), AlertConfig()
    try:
        cfg = load_config(params.get("preset", "demo"), params.get("overrides"))
        return cfg.name, cfg.alerts
    except Exception:  # the config itself may be what broke
        return str(params.get("preset", flow)), AlertConfig()


def alert_on_crash(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (on_failure, on_crashed): bad data -> visionflow.data.invalid; anything else but a NotPromoted
    verdict -> visionflow.flow.crashed.

    retrain's parameters (preset, overrides) give the model name and the webhook; a config that does not load
    (the crash itself, maybe) falls back to the preset's name and $VISIONFLOW_ALERT_WEBHOOK. The scoring-side
    flows (score, monitor, select-for-labeling) name their `model` and use $VISIONFLOW_ALERT_WEBHOOK.
    """
    try:
        error = state.result(raise_on_failure=False)
    except Exception as e:  # a crashed run's result may not be retrievable
        error = e
    if isinstance(error, NotPromoted | ParameterTypeError):
        return  # a verdict (the gate already alerted, or another run won the promotion), or a caller's typo
    model, alerts = _alert_target(flow.name, flow_run.parameters or {})
    if not isinstance(error, BaseException):
        error = state.message or f"flow run ended in state {state.type}"
    log.warning("%s failed; alerting: %s", flow.name, str(error).splitlines()[0])
    dispatch(crash_alert(model, error, url_for("flow-run", obj_id=flow_run.id), flow.name), alerts)
