"""The whole retention plan of one model: run folders and versions (ml.registry.retention), the monitor's side of
the store and the production download cache. flows.gc prints it, and applies it unless it is a dry run.

    plan = plan_retention(cfg, registry, PRODUCTION_CACHE, datetime.now(UTC))
    apply_deletions(plan, registry.store)

Prediction-log days go once every row in them is older than `logs_days` (a part is filed under its first row's
day, so a day is kept one day longer); retrain markers and monitor reports by their last write, and monitor
reports beyond the newest `reports_keep` whatever their age. The cache keeps
production's folder and the `cache_versions` most recently written others. Labeling batches are not deleted:
they are small, and every later selection skips the images they queued (ml.labeling.batch).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from ml.config.run import RunConfig
from ml.monitoring.log import log_prefix, marker_prefix, report_prefix
from ml.registry.retention import (
    Deletion,
    local_folder,
    run_folder_deletions,
    store_folders,
    version_deletions,
)
from ml.registry.store import ArtifactStore
from ml.registry.versions import PRODUCTION, Registry


def plan_retention(cfg: RunConfig, registry: Registry, cache_dir: Path, now: datetime) -> list[Deletion]:
    """Everything of cfg.name that cfg.retention lets go, each with its reason and size."""
    rules, model = cfg.retention, cfg.name
    plan = run_folder_deletions(cfg.storage.workdir / model, rules, now)
    plan += version_deletions(registry, model, rules, now)
    plan += monitor_deletions(registry, model, cfg, now)
    production = (registry.get_alias(model, PRODUCTION) or {}).get("version")
    return plan + cache_deletions(cache_dir / model, production, rules.cache_versions)


def monitor_deletions(registry: Registry, model: str, cfg: RunConfig, now: datetime) -> list[Deletion]:
    """Prediction-log days, retrain markers and monitor reports past their window."""
    rules, store = cfg.retention, registry.store
    logs, plan = timedelta(days=rules.logs_days), []
    for day, folder in sorted(store_folders(store, log_prefix(model)).items()):
        last_row = datetime.strptime(day, "date=%Y-%m-%d").replace(tzinfo=now.tzinfo) + timedelta(days=2)
        if now - last_row >= logs:
            why = f"rows older than retention.logs_days={rules.logs_days:g}"
            url = store.url(log_prefix(model) + day)
            plan.append(Deletion("prediction log", url, why, folder.size, keys=folder.keys))
    for kind, prefix, keep, setting in (
        ("retrain marker", marker_prefix(model), logs, f"logs_days={rules.logs_days:g}"),
        ("report", report_prefix(model), timedelta(days=rules.reports_days), f"reports_days={rules.reports_days:g}"),
    ):
        for name, folder in sorted(store_folders(store, prefix).items()):
            if now - folder.modified >= keep:
                why = f"written {(now - folder.modified).days} days ago (retention.{setting})"
                plan.append(Deletion(kind, store.url(prefix + name), why, folder.size, keys=folder.keys))
    return plan + surplus_reports(store, model, rules.reports_keep, {d.name for d in plan})


def surplus_reports(store: ArtifactStore, model: str, keep: int, planned: set[str]) -> list[Deletion]:
    """Monitor reports beyond the newest `keep` (by last write) that the age rule left."""
    prefix = report_prefix(model)
    folders = store_folders(store, prefix)
    newest_first = sorted(folders, key=lambda name: folders[name].modified, reverse=True)
    why = f"beyond the {keep} newest (retention.reports_keep={keep})"
    return [
        Deletion("report", store.url(prefix + name), why, folders[name].size, keys=folders[name].keys)
        for name in sorted(newest_first[keep:])
        if store.url(prefix + name) not in planned
    ]


def cache_deletions(model_cache: Path, production: str | None, keep: int) -> list[Deletion]:
    """Downloaded versions other than production's, past the `keep` most recently written."""
    if not model_cache.is_dir():
        return []
    folders = {p: local_folder(p) for p in model_cache.iterdir() if p.is_dir() and p.name != production}
    old = sorted(folders, key=lambda p: folders[p].modified, reverse=True)[keep:]
    why = f"not production, beyond the {keep} most recent (retention.cache_versions)"
    return [Deletion("cache", str(p), why, folders[p].size, path=p) for p in sorted(old)]
