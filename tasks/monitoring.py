"""Monitoring tasks: the reference at publish time, scoring into the prediction log, the drift check, its
artifacts, alerts, and the retrain it may start."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.deployments import run_deployment
from prefect.runtime import flow_run

from ml.config.run import RunConfig
from ml.data.prepare import PreparedData
from ml.export.onnx import ExportResult
from ml.monitoring.log import (
    LogWritten,
    MonitorCheck,
    ScoringJob,
    check_window,
    claim_retrain,
    monitor_alerts,
    retrain_marker,
    score_into_log,
)
from ml.monitoring.production import Production, ProductionSettings, Scope, load_production, resolve_settings
from ml.monitoring.reference import REFERENCES, ReferenceFiles
from ml.monitoring.scoring import ImageItem, ImageRef, image_source, referenced_images
from ml.registry.storage import open_store
from ml.registry.versions import Registry
from tasks.alerts import dispatch, flow_run_url
from tasks.registry import STORE_RETRIES


def run_name() -> str:
    """Sortable and unique: UTC time + the flow run's id (a random one outside Prefect)."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{str(flow_run.get_id() or uuid.uuid4())[:8]}"


@task(name="build-reference", cache_policy=NO_CACHE)
def drift_reference(
    cfg: RunConfig, prepared: PreparedData, exported: ExportResult, run_dir: Path, threshold: float | None = None
) -> ReferenceFiles | None:
    """The validation images scored by the exported model (+ the embedding PCA): published with the version.
    Classifiers only: a segmenter gets no reference (None), so it is not drift-monitored."""
    build = REFERENCES(cfg.model.task)
    return build(cfg, prepared, Path(exported.path), run_dir / "reference", threshold)


@task(name="load-production", cache_policy=NO_CACHE, **STORE_RETRIES)
def fetch_production(model: str, store: str, cache_dir: Path, endpoint_url: str | None = None) -> Production:
    return load_production(Registry(open_store(store, endpoint_url)), model, cache_dir)


@task(name="resolve-settings", cache_policy=NO_CACHE)
def settings_for(production: Production, overrides: dict[str, Any], scope: Scope) -> ProductionSettings:
    """The version's monitor, labeling and alerts settings with the run's overrides: resolved once, here, and
    passed to every task and shard of the run."""
    return resolve_settings(production.config, overrides, scope, production.version)


@task(name="score-images", cache_policy=NO_CACHE)
def score_source(production: Production, job: ScoringJob) -> LogWritten:
    """Stream the source through the model into the prediction log; unreadable files become rows, not errors.
    A segmenter's rows are its pixel uncertainty, unsure pixels being those in the version's labeling band."""
    return _log_scores(production, image_source(job.source, production.classes, job.endpoint_url), job)


@task(name="score-shard", cache_policy=NO_CACHE, **STORE_RETRIES)
def score_shard(job: ScoringJob, refs: list[ImageRef], shard: int) -> LogWritten:
    """One shard of a large source, wherever the task runner puts it (another process, a Dask worker): it loads
    the version its flow started with (downloaded once per machine), and a retry rewrites the same parquet parts."""
    return _log_scores(job.production(), referenced_images(refs, job.endpoint_url), job, shard)


def _log_scores(
    production: Production, items: Iterable[ImageItem], job: ScoringJob, shard: int | None = None
) -> LogWritten:
    written = score_into_log(production, items, job, shard)
    get_run_logger().info(
        "%d images scored in %.1f s (%d unreadable) -> %d parquet part(s)",
        written.rows,
        written.seconds,
        written.unreadable,
        len(written.keys),
    )
    return written


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(
    production: Production,
    settings: ProductionSettings,
    store: str,
    labels: str | None,
    run: str,
    endpoint_url: str | None = None,
) -> MonitorCheck:
    """Evidently report of the window vs the reference (+ live metrics if labelled) -> report.html in the store."""
    mon = settings.monitor
    truth = pd.read_csv(labels, dtype=str, keep_default_na=False) if labels else None
    return check_window(open_store(store, endpoint_url), production, mon, run, datetime.now(UTC), truth)


@task(name="monitor-artifacts", cache_policy=NO_CACHE)
def publish_monitor_artifacts(check: MonitorCheck) -> None:
    """`<model>-drift`: every score and verdict; `<model>-monitor`: the verdict with a link to the report."""
    create_table_artifact(key=f"{check.model}-drift", table=check.table(), description=f"{check.model}: drift tests")
    create_markdown_artifact(
        key=f"{check.model}-monitor", markdown=check.markdown(), description=f"{check.model}: monitor verdict"
    )


@task(name="monitor-alerts", cache_policy=NO_CACHE)
def send_monitor_alerts(check: MonitorCheck, settings: ProductionSettings) -> list[str]:
    """Drift, a live-metric drop or too few rows -> one Prefect event + webhook message naming them all
    (tasks.alerts.dispatch); returns the event sent ([] when all was well)."""
    alert = monitor_alerts(check, flow_run_url())
    if alert is None:
        return []
    dispatch(alert, settings.alerts)
    return [alert.event]


@task(name="trigger-retrain", cache_policy=NO_CACHE)
def trigger_retrain(
    check: MonitorCheck, settings: ProductionSettings, store: str, endpoint_url: str | None = None
) -> str | None:
    """On drift, with monitor.retrain_on_drift: start the retrain deployment (not waiting for it) unless one was
    started for this window today. Returns the new flow run's id, else None."""
    mon = settings.monitor
    if not (check.drift.drifted and mon.retrain_on_drift):
        return None
    name = mon.retrain_deployment or f"retrain/{check.model}"
    artifacts, log = open_store(store, endpoint_url), get_run_logger()
    key = retrain_marker(check.model, check.window, datetime.now(UTC))
    record = {"deployment": name, "monitor_run": check.run, "version": check.version, "groups": check.drift.groups}
    if not claim_retrain(artifacts, key, record):
        log.info("retrain for %s already started for this window (%s): not again", check.model, artifacts.url(key))
        return None
    try:
        started = run_deployment(name=name, timeout=0, idempotency_key=key, tags=["drift"])
    except BaseException:
        artifacts.delete(key)  # nothing started: let the next monitor run try again
        raise
    log.info("drift: started %s (flow run %s)", name, started.id)
    return str(started.id)
