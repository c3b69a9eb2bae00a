"""Alerts: what went wrong with a model, as a Slack-compatible webhook message and a Prefect event payload.

    if alert := run_alerts("demo", version, gate, champion, cfg.gate.champion, run_url=url):
        deliver(alert, cfg.alerts)        # POST {"text": ...}; retried; a dead webhook only logs a warning

One alert per run, however many reasons: the webhook gets one message per event, directly (alerts.webhook_url)
and through the automation of deployments/automations/ on a server, so an event per reason made one failed run
two messages. The event is the first reason (a failed gate before a regression: the verdict that stopped the
promotion); extra["reasons"] lists every reason's event and the text names them all.

The Prefect side (emit_event with the same names and payload) is tasks/alerts.py; this module is plain Python.
The webhook URL comes from `alerts.webhook_url` or the VISIONFLOW_ALERT_WEBHOOK environment variable.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from ml.config.evaluation import ChampionConfig
from ml.config.production import AlertConfig
from ml.data.errors import DatasetError
from ml.evaluation.gate import ChampionEval, GateReport, RuleResult, regressions

log = logging.getLogger(__name__)

ENV_WEBHOOK = "VISIONFLOW_ALERT_WEBHOOK"
GATE_FAILED = "visionflow.gate.failed"
METRIC_REGRESSED = "visionflow.metric.regressed"
FLOW_CRASHED = "visionflow.flow.crashed"
DATA_INVALID = "visionflow.data.invalid"
_TITLES = {
    GATE_FAILED: "gate failed, not promoted",
    METRIC_REGRESSED: "metrics regressed against production",
    FLOW_CRASHED: "flow crashed",
    DATA_INVALID: "data broke a validation rule, nothing trained",
}


class NotPromoted(RuntimeError):
    """The run did its work but its version did not reach `production`: a verdict, not a crash (no crash alert)."""


@dataclass
class Alert:
    event: str  # one of GATE_FAILED, METRIC_REGRESSED, FLOW_CRASHED, DATA_INVALID: the first of extra["reasons"]
    model: str
    version: str | None  # the candidate (None: the run crashed before publishing one)
    problems: list[str]  # failed rules, regressed metrics, or the error
    run_url: str | None = None  # the Prefect UI page of the flow run, when a UI is configured
    production: str | None = None  # the production version the candidate was compared with
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resource(self) -> dict[str, str]:
        """The Prefect resource the event is about: the model (automations match on it)."""
        return {"prefect.resource.id": f"visionflow.model.{self.model}", "prefect.resource.name": self.model}

    def text(self) -> str:
        titles = "; ".join(_TITLES[e] for e in self.extra.get("reasons", [self.event]))
        lines = [f":rotating_light: *{self.model}*: {titles}"]
        lines.append(f"version: `{self.version}`" if self.version else "version: none published")
        if self.production:
            lines.append(f"production: `{self.production}`")
        lines += [f"• {p}" for p in self.problems]
        lines.append(f"run: {self.run_url or 'no Prefect UI URL (PREFECT_UI_URL unset)'}")
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """The event payload: every field plus the rendered text (automations can forward it as is)."""
        return {**asdict(self), "text": self.text()}


def _rule_line(rule: RuleResult) -> str:
    measured = "n/a" if rule.measured is None else f"{rule.measured:.4g}"
    return f"{rule.rule}: measured {measured}" + (f" ({rule.detail})" if rule.detail else "")


def run_alerts(
    model: str, version: str, gate: GateReport, champion: ChampionEval, rules: ChampionConfig, run_url: str | None
) -> Alert | None:
    """One alert for a failed gate and/or metrics worse than production by > tolerance, naming every failed rule
    and regressed metric (GATE_FAILED if the gate failed, else METRIC_REGRESSED); None when neither happened,
    or when the gate only held production against a candidate within noise (GateReport.held)."""
    reasons, problems, extra = [], [], {}
    if not gate.passed and not gate.held:
        reasons.append(GATE_FAILED)
        problems += [_rule_line(r) for r in gate.failed]
    if worse := regressions(champion, rules):
        reasons.append(METRIC_REGRESSED)
        problems += [f"{name} regressed: {b:.4f} -> {n:.4f} ({n - b:+.4f})" for name, (b, n) in worse.items()]
        extra["regressed"] = {name: {"production": b, "candidate": n} for name, (b, n) in worse.items()}
    if not reasons:
        return None
    return Alert(
        reasons[0], model, version, problems, run_url, champion.production_version, {"reasons": reasons, **extra}
    )


def crash_alert(model: str, error: BaseException | str, run_url: str | None, flow: str = "retrain") -> Alert:
    """DATA_INVALID when the data broke a rule (the data's owner must act), else FLOW_CRASHED; the problem line
    names the flow that failed."""
    problem = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
    event = DATA_INVALID if isinstance(error, DatasetError) else FLOW_CRASHED
    return Alert(event, model, None, [f"{flow}: {problem}"[:2000]], run_url)


def webhook_url(cfg: AlertConfig) -> str | None:
    """The configured URL, else $VISIONFLOW_ALERT_WEBHOOK, else None (no webhook, events only)."""
    return cfg.webhook_url or os.environ.get(ENV_WEBHOOK) or None


def post_json(
    url: str, body: dict[str, Any], attempts: int = 3, timeout_s: float = 5.0, backoff_s: float = 0.5
) -> bool:
    """POST `body` as JSON; retry connection errors, 429 and 5xx with exponential backoff. True if delivered.

    Never raises for an unreachable or failing receiver: an alert must not take the flow down with it.
    """
    data = json.dumps(body).encode()
    reason = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s):
                return True
        except urllib.error.HTTPError as e:
            reason = f"HTTP {e.code} {e.reason}"
            if e.code != 429 and e.code < 500:
                break  # the receiver refuses this message: sending it again will not help
        except (OSError, ValueError) as e:  # URLError, timeouts, refused connections; ValueError: a bad URL
            reason = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
    log.warning("alert webhook %s not delivered after %d attempt(s): %s", _redact(url), attempt + 1, reason)
    return False


def _redact(url: str) -> str:
    """Webhook URLs carry their secret in the path: log only scheme and host."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/..."


def deliver(alert: Alert, cfg: AlertConfig) -> bool:
    """Send the alert's Slack-compatible message to the webhook, if one is configured."""
    url = webhook_url(cfg)
    if url is None:
        log.info("no alert webhook (alerts.webhook_url / $%s): %s only as a Prefect event", ENV_WEBHOOK, alert.event)
        return False
    return post_json(url, {"text": alert.text()}, cfg.webhook_attempts, cfg.webhook_timeout_s)
