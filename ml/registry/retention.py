"""Retention of run folders and registry versions: a plan (what to delete, why, how many bytes), then apply.

    plan = run_folder_deletions(workdir / model, rules, now) + version_deletions(registry, model, rules, now)
    print(plan_table(plan))               # a dry run stops here
    apply_deletions(plan, registry)

Versions are kept when an alias points at them, when they are among the last `keep_history` of production's
history (rollback targets), or when younger than `unpromoted_days`; the rest go, metadata.json first. A version
is listed only while its metadata.json exists (ml.registry.versions), so a delete cut off halfway leaves files
that are never listed; they, and those of a publish that never finished, go as an incomplete version once the
id is `incomplete_hours` old (a publish in progress is younger). Run folders: a published one goes
`published_runs_hours` after its publish; an unpublished one (failed, or interrupted and resumable:
ml.training.run_dirs) only once nothing in it changed for `failed_runs_days`.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ml.config.retention import RetentionConfig
from ml.registry.store import ArtifactStore
from ml.registry.versions import METADATA_FILE, PRODUCTION, Registry, alias_history
from ml.training.run_dirs import PUBLISHED_FILE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deletion:
    kind: str  # run folder, version, incomplete version, prediction log, retrain marker, report, cache
    name: str  # the folder's path, or the store URL of the keys' folder
    why: str
    size: int  # bytes
    path: Path | None = None  # a local folder, removed whole
    keys: tuple[str, ...] = ()  # store keys, deleted in this order
    version: tuple[str, str] | None = None  # (model, version): apply checks again that no alias points at it


@dataclass(frozen=True)
class Folder:
    """Objects under one folder of the store (their keys), or a local folder: bytes and newest write."""

    keys: tuple[str, ...]
    size: int
    modified: datetime


def store_folders(store: ArtifactStore, prefix: str) -> dict[str, Folder]:
    """The store's keys under `prefix` grouped by their next path segment (a version, a day, a run)."""
    grouped: dict[str, list] = {}
    for key, obj in store.list_objects(prefix).items():
        grouped.setdefault(key[len(prefix) :].split("/")[0], []).append((key, obj))
    return {
        name: Folder(tuple(k for k, _ in items), sum(o.size for _, o in items), max(o.modified for _, o in items))
        for name, items in grouped.items()
    }


def local_folder(path: Path) -> Folder:
    """A local folder's bytes and newest modification time (the folder's own when empty); no store keys."""
    stats = [(Path(d) / f).stat() for d, _, names in os.walk(path) for f in names]
    newest = max([path.stat().st_mtime, *(st.st_mtime for st in stats)])
    return Folder((), sum(st.st_size for st in stats), datetime.fromtimestamp(newest, UTC))


def run_folder_deletions(model_dir: Path, rules: RetentionConfig, now: datetime) -> list[Deletion]:
    """Published run folders past `published_runs_hours`, unpublished ones idle for `failed_runs_days`."""
    plan = []
    for path in sorted(p for p in model_dir.glob("*") if p.is_dir()) if model_dir.is_dir() else []:
        folder, published = local_folder(path), path / PUBLISHED_FILE
        if published.exists():
            since = datetime.fromtimestamp(published.stat().st_mtime, UTC)
            if now - since >= timedelta(hours=rules.published_runs_hours):
                why = f"published {_ago(now - since)} ago (retention.published_runs_hours="
                why += f"{rules.published_runs_hours:g})"
                plan.append(Deletion("run folder", str(path), why, folder.size, path=path))
        elif now - folder.modified >= timedelta(days=rules.failed_runs_days):
            why = f"not published, untouched for {_ago(now - folder.modified)} (retention.failed_runs_days="
            plan.append(Deletion("run folder", str(path), f"{why}{rules.failed_runs_days:g})", folder.size, path=path))
    return plan


def version_deletions(registry: Registry, model: str, rules: RetentionConfig, now: datetime) -> list[Deletion]:
    """Complete versions no rule keeps (metadata.json first), and the files of incomplete ones."""
    prefix = f"models/{model}/versions/"
    folders = store_folders(registry.store, prefix)
    complete = set(registry.versions(model))
    keep = kept_versions(registry, model, rules, now)
    plan = []
    for version, folder in sorted(folders.items()):
        age = now - Registry.version_time(version)
        url = registry.version_uri(model, version)
        if version not in complete:
            if age >= timedelta(hours=rules.incomplete_hours):
                why = f"incomplete (no {METADATA_FILE}), {_ago(age)} old"
                plan.append(Deletion("incomplete version", url, why, folder.size, keys=folder.keys))
        elif version not in keep:
            marker = f"{prefix}{version}/{METADATA_FILE}"
            keys = (marker, *sorted(k for k in folder.keys if k != marker))  # unlisted from the first delete
            why = f"{_ago(age)} old, no alias, not in production's last {rules.keep_history}"
            plan.append(Deletion("version", url, why, folder.size, keys=keys, version=(model, version)))
    return plan


def kept_versions(registry: Registry, model: str, rules: RetentionConfig, now: datetime) -> dict[str, str]:
    """Version -> why it is kept: an alias points at it, production's recent history, or young."""
    keep: dict[str, str] = {}
    for version in registry.versions(model):
        if now - Registry.version_time(version) < timedelta(days=rules.unpromoted_days):
            keep[version] = f"younger than {rules.unpromoted_days:g} days"
    production = registry.get_alias(model, PRODUCTION)
    history = alias_history(production)[::-1][: rules.keep_history] if production else []
    keep |= {v: f"production's history (last {rules.keep_history})" for v in history}
    keep |= {record["version"]: f"alias {alias}" for alias, record in registry.aliases(model).items()}
    return keep


def apply_deletions(plan: list[Deletion], store: ArtifactStore) -> list[Deletion]:
    """Delete what `plan` lists, in order; a version an alias has moved onto since the plan was made is skipped.
    Returns what was deleted."""
    registry, done = Registry(store), []
    for item in plan:
        if item.version and any(r["version"] == item.version[1] for r in registry.aliases(item.version[0]).values()):
            log.warning("kept %s: an alias points at it now", item.name)
            continue
        if item.path is not None:
            shutil.rmtree(item.path, ignore_errors=True)
        for key in item.keys:
            store.delete(key)
        done.append(item)
    return done


def plan_table(plan: list[Deletion]) -> list[dict[str, str]]:
    """The plan as rows for a table (kind, MB, what, why)."""
    return [{"kind": d.kind, "MB": f"{d.size / 1e6:.2f}", "what": d.name, "why": d.why} for d in plan]


def _ago(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
