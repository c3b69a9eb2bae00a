"""Retention tasks: plan what cfg.retention lets go, then delete it (both idempotent, so retried like the store)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from ml.config.run import RunConfig
from ml.monitoring.retention import plan_retention
from ml.registry.retention import Deletion, apply_deletions, plan_table
from tasks.registry import STORE_RETRIES, open_registry


@task(name="plan-retention", cache_policy=NO_CACHE, **STORE_RETRIES)
def plan_deletions(cfg: RunConfig, cache_dir: Path) -> list[Deletion]:
    return plan_retention(cfg, open_registry(cfg), cache_dir, datetime.now(UTC))


@task(name="apply-retention", cache_policy=NO_CACHE, **STORE_RETRIES)
def delete_planned(cfg: RunConfig, plan: list[Deletion]) -> list[Deletion]:
    return apply_deletions(plan, open_registry(cfg).store)


@task(name="publish-retention", cache_policy=NO_CACHE)
def publish_plan(model: str, plan: list[Deletion], dry_run: bool) -> None:
    """The plan as the `<model>-retention` table artifact, so the UI shows each night's deletions."""
    verb = "would delete (dry run)" if dry_run else "deleted"
    rows = plan_table(plan) or [{"kind": "-", "MB": "0.00", "what": "nothing", "why": "all kept"}]
    create_table_artifact(key=f"{model}-retention", table=rows, description=f"{model}: retention {verb}")
