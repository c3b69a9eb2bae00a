"""Registry tasks: read the champion, upload the version, then move `production` only if the gate passed."""

from __future__ import annotations

from pathlib import Path

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import flow_run
from prefect.states import State

from ml.config.run import RunConfig
from ml.evaluation.gate import GateReport
from ml.labeling.batch import labels_from_batches
from ml.monitoring.reference import ReferenceFiles
from ml.registry.publish import Promotion, PublishResult, promote_if_passed, publish_version, run_files, run_metadata
from ml.registry.records import RunRecords
from ml.registry.storage import open_store
from ml.registry.store import StoreUnreachable, is_refusal
from ml.registry.versions import PRODUCTION, Registry
from tasks.alerts import flow_run_url


def open_registry(cfg: RunConfig) -> Registry:
    return Registry(open_store(cfg.storage.uri, cfg.storage.endpoint_url, cfg.storage))


def worth_retrying(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect's retry_condition_fn for store tasks: retry a 5xx, a refused or dropped connection (a restarting
    server: fast to fail, so retries cost seconds), a lost lock; not a refusal that would repeat (missing
    credentials, no such bucket, access denied), nor a timeout.

    Timeouts are not retried because botocore already retried them: each S3 request makes storage.max_attempts
    attempts of at most connect_timeout_s + read_timeout_s each (ml.registry.s3_store.worst_case_wait_s: 57 s with the
    defaults), and a Prefect retry would repeat all of that, plus its delays, for each of STORE_RETRIES["retries"]
    (2 x 57 + 12 s more). So a silent endpoint fails a store task, and reach-store the run, within one request's
    bound."""
    err = state.result(raise_on_failure=False)
    if isinstance(err, StoreUnreachable) and err.timed_out:
        return False
    return not (isinstance(err, BaseException) and is_refusal(err))


STORE_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": worth_retrying}


@task(name="reach-store", cache_policy=NO_CACHE, **STORE_RETRIES)
def reach_store(cfg: RunConfig) -> None:
    """Read the model's `production` alias before any work: a wrong endpoint, bucket or credentials fail the run
    in seconds instead of after training."""
    registry = open_registry(cfg)
    registry.get_alias(cfg.name, PRODUCTION)
    get_run_logger().info("store %s reachable", registry.store.url())


@task(name="read-production", cache_policy=NO_CACHE, **STORE_RETRIES)
def read_production(cfg: RunConfig) -> str | None:
    """The version `production` points at now: the champion this run is judged against and must still replace."""
    alias = open_registry(cfg).get_alias(cfg.name, PRODUCTION)
    return alias["version"] if alias else None


@task(name="publish", cache_policy=NO_CACHE, **STORE_RETRIES)
def publish_model(
    cfg: RunConfig, records: RunRecords, report_md: Path, reference: ReferenceFiles | None = None
) -> PublishResult:
    """Upload the version, gate verdict included. A retry after a failed upload starts a new version; the
    half-written one is never listed. `reference` (tasks.monitoring.drift_reference) adds the drift reference."""
    registry = open_registry(cfg)
    labels = labels_from_batches(registry.store, cfg.name, records.prepared)
    metadata = run_metadata(cfg, records, labels, run={"flow_run_id": flow_run.get_id(), "url": flow_run_url()})
    return publish_version(
        registry, cfg, run_files(cfg, records, report_md, reference.files() if reference else None), metadata
    )


@task(name="promote", cache_policy=NO_CACHE)
def promote_model(cfg: RunConfig, version: str, gate: GateReport, expected_production: str | None) -> Promotion:
    """No retries: losing the race to another run is final (the champion this run beat is gone)."""
    promotion = promote_if_passed(open_registry(cfg), cfg.name, version, gate, expected_production)
    if promotion.lost_to:
        get_run_logger().warning(promotion.message)
    else:
        get_run_logger().info(promotion.message)
    return promotion
