"""The monitor's side of the store: the prediction log, the window check, its report, alerts and retrain marker.

    written = write_log(store, "demo", version, run, "incoming/", score_stream(model, items), chunk_rows=10_000)
    settings = resolve_settings(production.config, {"monitor.window": "1d"}, SCORING)
    check = check_window(store, production, settings.monitor, run, datetime.now(UTC))  # report.html, summary.json
    monitor_alerts(check, run_url)                               # -> one MonitorAlert naming every problem, or None
    (ml.monitoring.alerts)

Layout in the store:
    monitoring/<model>/predictions/date=YYYY-MM-DD/<run>-<part>.parquet   the prediction log, append-only
    monitoring/<model>/retrain-triggers/<YYYY-MM-DD>-<window>.json        one retrain per window and day
    reports/monitor/<model>/<run>/report.html | summary.json
"""

from __future__ import annotations

import io
import json
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from ml.config.production import MonitorConfig, parse_window
from ml.monitoring.alerts import Alert
from ml.monitoring.drift import DriftResult, LiveMetrics, attach_labels, detect_drift, drift_report, live_metrics
from ml.monitoring.production import Production, ProductionSettings, load_version
from ml.monitoring.rows import prediction_rows
from ml.monitoring.scoring import ImageItem
from ml.registry.storage import open_store
from ml.registry.store import ArtifactStore, ConflictError
from ml.registry.versions import Registry

DRIFT_DETECTED = "visionflow.drift.detected"
LIVE_METRIC_DROPPED = "visionflow.live_metric.dropped"
TOO_FEW_ROWS = "visionflow.monitor.too_few_rows"  # no verdict possible: scoring may have stopped


@dataclass
class LogWritten:
    keys: list[str]  # the parquet parts, in order
    rows: int
    unreadable: int
    labelled: int  # rows whose file sits in a class folder
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def merged(cls, parts: list[LogWritten], seconds: float) -> LogWritten:
        """The shards of one scoring run as one (their keys in shard order; `seconds`: the run's wall time)."""
        keys = [key for part in parts for key in part.keys]
        return cls(keys, *(sum(getattr(p, f) for p in parts) for f in ("rows", "unreadable", "labelled")), seconds)


@dataclass(frozen=True)
class ScoringJob:
    """One flows.score or flows.select_for_labeling run, as its tasks (and every shard) see it: the version it
    scores with, where the images and the store are, the run's settings and name (the log's run, or the batch)."""

    model: str
    version: str
    source: str
    store: str
    settings: ProductionSettings  # resolved once by the flow
    run: str
    cache_dir: str  # where a shard's machine downloads the version (once)
    endpoint_url: str | None = None

    def production(self) -> Production:
        """The version, loaded on the machine the shard runs on (sha256-checked, downloaded once there)."""
        registry = Registry(open_store(self.store, self.endpoint_url))
        return load_version(registry, self.model, self.version, Path(self.cache_dir))


def log_prefix(model: str) -> str:
    return f"monitoring/{model}/predictions/"


def report_prefix(model: str) -> str:
    return f"reports/monitor/{model}/"


def write_log(
    store: ArtifactStore,
    model: str,
    version: str,
    run: str,
    source: str,
    frames: Iterable[pd.DataFrame],
    chunk_rows: int,
    shard: int | None = None,
) -> LogWritten:
    """Append scored frames to the prediction log, `chunk_rows` rows per parquet part:
    monitoring/<model>/predictions/date=YYYY-MM-DD/<run>[-<shard>]-<part>.parquet (the date of the part's first
    row). Each row gains timestamp (UTC, of its batch), model_version, run and source."""
    name = run if shard is None else f"{run}-{shard:05d}"
    start, done = time.perf_counter(), LogWritten([], 0, 0, 0)

    def put(part: pd.DataFrame) -> None:
        key = f"{log_prefix(model)}date={part['timestamp'].iloc[0]:%Y-%m-%d}/{name}-{len(done.keys):05d}.parquet"
        data = io.BytesIO()
        part.to_parquet(data, index=False)
        store.put_bytes(key, data.getvalue())
        done.keys.append(key)

    pending = pd.DataFrame()
    for frame in frames:
        stamped = frame.assign(timestamp=pd.Timestamp.now(tz="UTC"), model_version=version, run=run, source=source)
        pending = pd.concat([pending, stamped], ignore_index=True) if len(pending) else stamped
        while len(pending) >= chunk_rows:
            put(pending.iloc[:chunk_rows])
            pending = pending.iloc[chunk_rows:].reset_index(drop=True)
        done.rows += len(frame)
        done.unreadable += int((~frame["readable"]).sum())
        done.labelled += int((frame["label"] != "").sum())
    if len(pending):
        put(pending)
    done.seconds = time.perf_counter() - start
    return done


def score_into_log(
    production: Production, items: Iterable[ImageItem], job: ScoringJob, shard: int | None = None
) -> LogWritten:
    """Score `items` with the production version at the job's monitor settings (segmenters: their labeling band
    too) and append the rows to the prediction log (write_log)."""
    mon, band = job.settings.monitor, job.settings.labeling.uncertain_band
    frames = prediction_rows(production, items, band, mon.batch_size, mon.workers)
    log = open_store(job.store, job.endpoint_url)
    return write_log(log, job.model, production.version, job.run, job.source, frames, mon.chunk_rows, shard)


def read_window(store: ArtifactStore, model: str, since: datetime) -> pd.DataFrame:
    """Prediction-log rows with timestamp >= since, read only from the date partitions that can hold them."""
    first_day = f"date={(since - timedelta(days=1)):%Y-%m-%d}"  # a part is filed under its first row's date
    keys = [k for k in store.list(log_prefix(model)) if k[len(log_prefix(model)) :].split("/")[0] >= first_day]
    frames = [pd.read_parquet(io.BytesIO(store.get_bytes(k))) for k in keys]
    frames = [f[f["timestamp"] >= pd.Timestamp(since)] for f in frames]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def marker_prefix(model: str) -> str:
    return f"monitoring/{model}/retrain-triggers/"


def retrain_marker(model: str, window: str, now: datetime) -> str:
    """One retrain per model, window length and day: the key a trigger must create first."""
    return f"{marker_prefix(model)}{now:%Y-%m-%d}-{window}.json"


def claim_retrain(store: ArtifactStore, key: str, record: dict[str, Any]) -> bool:
    """Create the trigger marker; False if it exists already (a retrain for this window was started)."""
    try:
        store.write_if(key, json.dumps(record, indent=2, default=str).encode(), None)
    except ConflictError:
        return False
    return True


@dataclass
class MonitorCheck:
    """One monitor run: the window of the production version's log against its reference."""

    model: str
    version: str
    run: str
    window: str
    since: str  # ISO time: the window's start
    rows: int  # log rows of the production version in the window
    other_versions: int  # window rows scored by other versions: left out
    drift: DriftResult
    live: LiveMetrics
    links: dict[str, str]  # report / summary -> URL in the store

    @property
    def verdict(self) -> str:
        return self.drift.verdict

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drift": self.drift.to_dict(), "live": self.live.to_dict()}

    def table(self) -> list[dict[str, Any]]:
        """Every test with its score and verdict, then each group's verdict and the live metrics."""
        rows = [{**r, "verdict": "DRIFT" if r["drifted"] else "ok"} for r in self.drift.columns]
        rows = [{k: v for k, v in r.items() if k != "drifted"} for r in rows]
        for group, drifted in self.drift.groups.items():
            rows.append({"group": group, "column": "(group)", "verdict": "DRIFT" if drifted else "ok"})
        for name, value in self.live.live.items():
            base = self.live.validation.get(name)
            floor = None if base is None else base - self.live.tolerance
            verdict = "DROP" if name in self.live.dropped else "ok"
            rows.append(
                {
                    "group": "live metric",
                    "column": name,
                    "method": f"{self.live.labelled} labelled rows",
                    "threshold": floor,
                    "score": value,
                    "verdict": verdict,
                }
            )
        return rows

    def markdown(self) -> str:
        drifted = [g for g, d in self.drift.groups.items() if d]
        head = f"**{self.model}** `{self.version}`, last {self.window}: **{self.verdict.upper()}**"
        lines = [head + (f" ({', '.join(drifted)})" if drifted else "")]
        lines.append(
            f"{self.rows} log rows (reference {self.drift.reference_rows}); other versions left out: "
            f"{self.other_versions}"
        )
        if self.live.judged:
            base = self.live.validation
            live = ", ".join(f"{k} {v:.4f} (validation {base.get(k)})" for k, v in self.live.live.items())
            lines.append(f"live on {self.live.labelled} labelled rows: {live}")
        lines += [f"{name}: [{url}]({url})" for name, url in self.links.items()]
        return "\n\n".join(lines)


def save_report(store: ArtifactStore, folder: str, snapshot: Any | None, summary: dict[str, Any]) -> dict[str, str]:
    """report.html (the Evidently snapshot, if there was one) and summary.json under `folder`; name -> URL."""
    urls = {}
    if snapshot is not None:
        with tempfile.TemporaryDirectory() as tmp:
            snapshot.save_html(f"{tmp}/report.html")
            store.put_file(f"{folder}/report.html", f"{tmp}/report.html")
        urls["report"] = store.url(f"{folder}/report.html")
    store.put_json(f"{folder}/summary.json", summary)
    return {**urls, "summary": store.url(f"{folder}/summary.json")}


def check_window(
    store: ArtifactStore,
    production: Production,
    mon: MonitorConfig,
    run: str,
    now: datetime,
    labels: pd.DataFrame | None = None,
) -> MonitorCheck:
    """Drift and live metrics of the last `mon.window` of the production version's log; report saved in the store
    under reports/monitor/<model>/<run>/. `labels` (path,label) adds ground truth to the logged rows."""
    if production.reference is None:
        why = (
            "segmenters (model.task=segment) are scored and picked for labeling, not drift-monitored"
            if production.kind == "segment"
            else "it was published before drift monitoring existed; retrain to create one"
        )
        raise ValueError(f"{production.model} {production.version} has no reference.parquet: {why}")
    since = now - parse_window(mon.window)
    window = read_window(store, production.model, since)
    mine = window[window["model_version"] == production.version] if len(window) else window
    if labels is not None and len(mine):
        mine = attach_labels(mine, labels)
    tested = mine.sample(mon.max_rows, random_state=0) if len(mine) > mon.max_rows else mine
    reference = pd.read_parquet(production.reference)
    drift = detect_drift(reference, tested, mon)
    live = live_metrics(mine, production.metrics, mon)
    check = MonitorCheck(
        production.model,
        production.version,
        run,
        mon.window,
        since.isoformat(),
        len(mine),
        len(window) - len(mine),
        drift,
        live,
        {},
    )
    snapshot = drift_report(reference, tested, drift) if drift.columns else None
    check.links = save_report(store, f"{report_prefix(production.model)}{run}", snapshot, check.to_dict())
    return check


@dataclass
class MonitorAlert(Alert):
    """A monitoring alert on the production version, with its own title (ml.monitoring.alerts' titles are the
    retrain's)."""

    title: str = ""

    def text(self) -> str:
        lines = [f":rotating_light: *{self.model}*: {self.title}", f"production: `{self.version}`"]
        lines += [f"• {p}" for p in self.problems]
        lines += [f"{name}: {url}" for name, url in self.extra.get("links", {}).items()]
        lines.append(f"run: {self.run_url or 'no Prefect UI URL (PREFECT_UI_URL unset)'}")
        return "\n".join(lines)


def monitor_alerts(check: MonitorCheck, run_url: str | None) -> MonitorAlert | None:
    """One alert naming every problem of the window (one message per run, as ml.monitoring.alerts.run_alerts):
    DRIFT_DETECTED listing the drifted tests, LIVE_METRIC_DROPPED the metrics that fell, TOO_FEW_ROWS when the
    window holds too few readable predictions for a verdict (a monitor that stays silent when production stopped
    scoring would look like "no drift"). The event is the first of those; extra["reasons"] lists them all."""
    parts: list[tuple[str, str, list[str]]] = []  # (event, title, problem lines)
    if check.drift.drifted:
        groups = ", ".join(g for g, d in check.drift.groups.items() if d)
        lines = [
            f"{r['group']}: {r['column']} ({r['method']} {r['score']:.3g}, threshold {r['threshold']:g})"
            for r in check.drift.columns
            if r["drifted"]
        ]
        parts.append((DRIFT_DETECTED, f"drift over the last {check.window} ({groups})", lines))
    if check.live.dropped:
        lines = [
            f"{m}: validation {check.live.validation[m]:.4f} -> live {check.live.live[m]:.4f} "
            f"on {check.live.labelled} labelled images"
            for m in check.live.dropped
        ]
        parts.append((LIVE_METRIC_DROPPED, f"live metrics dropped over the last {check.window}", lines))
    if check.verdict == "too few rows":
        rows = f"{check.drift.current_rows} readable of {check.rows} rows logged by this version"
        lines = [f"{rows}: fewer than monitor.min_rows; is production still scoring?"]
        parts.append((TOO_FEW_ROWS, f"too few predictions over the last {check.window} for a verdict", lines))
    if not parts:
        return None
    events, titles, lines = zip(*parts, strict=True)
    extra = {"window": check.window, "links": check.links, "reasons": list(events)}
    problems = [line for part in lines for line in part]
    return MonitorAlert(
        events[0], check.model, check.version, problems, run_url, check.version, extra, "; ".join(titles)
    )
