"""Retention (ml.registry.retention, ml.monitoring.retention, flows.gc): what is kept, what goes, and that disk
stays flat over nights of retrains with gc after each."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.gc import gc
from flows.gc import main as gc_main
from flows.retrain import retrain
from ml.config.retention import RetentionConfig
from ml.config.run import load_config
from ml.monitoring.log import log_prefix, report_prefix
from ml.monitoring.retention import cache_deletions, monitor_deletions
from ml.registry.retention import apply_deletions, run_folder_deletions, version_deletions
from ml.registry.storage import open_store
from ml.registry.versions import PRODUCTION, Registry
from ml.training.run_dirs import mark_published
from tests.conftest import tiny_overrides
from tests.s3_servers import aws_env, moto_server  # noqa: F401 (fixtures)


def _publish(registry: Registry, tmp: Path, n: int) -> list[str]:
    (tmp / "plots").mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "plots/confusion.png", "report.md"):
        (tmp / name).write_bytes(os.urandom(2000))
    files = {name: tmp / name for name in ("model.onnx", "plots/confusion.png", "report.md")}
    return [registry.publish("demo", files, {"gate": {"passed": True}}) for _ in range(n)]


def _keys(registry: Registry, version: str) -> list[str]:
    return registry.store.list(f"models/demo/versions/{version}/")


def test_versions_kept_by_rule_and_the_rest_deleted(store_uri: str, tmp_path: Path) -> None:
    registry = Registry(open_store(store_uri))
    v1, v2, v3, v4, v5, v6 = _publish(registry, tmp_path, 6)
    for v in (v1, v2, v3, v4):
        registry.promote("demo", v)  # production v4, history [v1, v2, v3]
    registry.set_alias("demo", "staging", v5)
    young = RetentionConfig(unpromoted_days=1, keep_history=1)
    assert version_deletions(registry, "demo", young, datetime.now(UTC)) == []  # all younger than a day: all kept

    plan = version_deletions(registry, "demo", RetentionConfig(unpromoted_days=0, keep_history=2), datetime.now(UTC))
    assert [d.version for d in plan] == [("demo", v1), ("demo", v6)]  # v4 production, v5 staging, v2-v3 history
    assert all(d.keys[0].endswith(f"{d.version[1]}/metadata.json") and d.size > 6000 for d in plan)
    assert apply_deletions(plan, registry.store) == plan
    assert registry.versions("demo") == [v2, v3, v4, v5]
    assert _keys(registry, v1) == _keys(registry, v6) == []
    assert registry.get_alias("demo", PRODUCTION)["version"] == v4
    registry.rollback("demo")  # the history kept is still a rollback target
    assert registry.get_alias("demo", PRODUCTION)["version"] == v3


def test_a_half_deleted_version_is_never_listed_and_its_files_go_later(tmp_path: Path) -> None:
    registry = Registry(open_store(f"file://{tmp_path}/store"))
    (old, current) = _publish(registry, tmp_path / "files", 2)
    registry.promote("demo", current)
    rules = RetentionConfig(unpromoted_days=0, keep_history=0)
    (item,) = version_deletions(registry, "demo", rules, datetime.now(UTC))
    registry.store.delete(item.keys[0])  # what a delete cut off after its first request leaves
    assert registry.versions("demo") == [current] and len(_keys(registry, old)) == 3
    now = datetime.now(UTC)
    assert version_deletions(registry, "demo", rules, now) == []  # an interrupted publish looks the same: kept
    (rest,) = version_deletions(registry, "demo", rules, now + timedelta(hours=rules.incomplete_hours))
    assert rest.kind == "incomplete version" and set(rest.keys) == set(_keys(registry, old))
    apply_deletions([rest], registry.store)
    assert _keys(registry, old) == [] and registry.versions("demo") == [current]


def test_apply_keeps_a_version_an_alias_moved_onto_after_the_plan(tmp_path: Path) -> None:
    registry = Registry(open_store(f"file://{tmp_path}/store"))
    (old, current) = _publish(registry, tmp_path / "files", 2)
    registry.promote("demo", current)
    plan = version_deletions(registry, "demo", RetentionConfig(unpromoted_days=0, keep_history=0), datetime.now(UTC))
    registry.rollback("demo", old)  # a person rolls back while gc runs
    assert apply_deletions(plan, registry.store) == []
    assert registry.versions("demo") == [old, current]


def test_published_run_folders_go_failed_ones_stay_inside_the_window(tmp_path: Path) -> None:
    published, failed = tmp_path / "demo" / "s1-abc", tmp_path / "demo" / "s2-abc"
    for folder in (published, failed):
        folder.mkdir(parents=True)
        (folder / "last.pt").write_bytes(os.urandom(5000))
    mark_published(published, "v1")
    rules = RetentionConfig(published_runs_hours=1, failed_runs_days=7)
    assert run_folder_deletions(tmp_path / "demo", rules, datetime.now(UTC)) == []  # the flow may still read its report
    (gone,) = run_folder_deletions(tmp_path / "demo", rules, datetime.now(UTC) + timedelta(hours=2))
    assert gone.path == published and gone.size > 5000
    assert [d.path for d in run_folder_deletions(tmp_path / "demo", rules, datetime.now(UTC) + timedelta(days=7))] == [
        published,
        failed,  # unpublished (resumable) only once untouched for failed_runs_days
    ]
    apply_deletions([gone], open_store(f"file://{tmp_path}/store"))
    assert not published.exists() and (failed / "last.pt").exists()


def test_log_days_reports_and_cached_versions_past_their_window(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/store")
    day = f"date={datetime.now(UTC):%Y-%m-%d}"
    store.put_bytes(f"{log_prefix('demo')}{day}/run-00000.parquet", b"rows")
    store.put_json(f"{report_prefix('demo')}run-1/summary.json", {"verdict": "ok"})
    cfg = load_config("demo", {"retention.logs_days": 30, "retention.reports_days": 10})
    registry = Registry(store)
    now = datetime.now(UTC)
    assert monitor_deletions(registry, "demo", cfg, now) == []
    assert [d.kind for d in monitor_deletions(registry, "demo", cfg, now + timedelta(days=11))] == ["report"]
    late = monitor_deletions(registry, "demo", cfg, now + timedelta(days=32))
    assert [d.kind for d in late] == ["prediction log", "report"]
    apply_deletions(late, store)
    assert store.list("monitoring/") == store.list("reports/") == []

    for run in ("run-a", "run-b", "run-c"):  # young, but more of them than reports_keep: the oldest go
        store.put_json(f"{report_prefix('demo')}{run}/summary.json", {"verdict": "ok"})
        time.sleep(0.02)
    by_count = load_config("demo", {"retention.reports_keep": 2})
    (surplus,) = monitor_deletions(registry, "demo", by_count, datetime.now(UTC))
    assert surplus.name.endswith("run-a") and "retention.reports_keep=2" in surplus.why

    cache = tmp_path / "cache" / "demo"
    for i, version in enumerate(("prod", "older", "newer")):
        (cache / version).mkdir(parents=True)
        (cache / version / "model.onnx").write_bytes(b"x" * 100)
        os.utime(cache / version / "model.onnx", (1e9 + i, 1e9 + i))
    assert [d.path.name for d in cache_deletions(cache, "prod", keep=1)] == ["older"]
    assert cache_deletions(cache, "prod", keep=2) == []


def test_retention_must_not_delete_the_monitor_window() -> None:
    with pytest.raises(ValidationError, match="retention.logs_days 3 < monitor.window 7d"):
        load_config("demo", {"retention.logs_days": 3, "monitor.window": "7d"})
    with pytest.raises(ValidationError, match="extra"):
        load_config("demo", {"retention.keep": 3})


@pytest.mark.usefixtures("prefect_harness")
def test_gc_dry_run_lists_sizes_and_deletes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    over = tiny_overrides(tmp_path, **{"retention.unpromoted_days": 0, "retention.keep_history": 0})
    registry = Registry(open_store(over["storage.uri"]))
    old, current = _publish(registry, tmp_path / "files", 2)
    registry.promote("demo", current)
    before = registry.store.list()
    args = ["--preset", "demo", *(f"--set={k}={json.dumps(v)}" for k, v in over.items()), "--cache-dir", "none"]
    assert gc_main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would delete version {registry.version_uri('demo', old)} (0.01 MB)" in out
    assert json.loads(out.splitlines()[-1])["planned"] == 1 and registry.store.list() == before
    summary = gc("demo", over, cache_dir=str(tmp_path / "cache"))
    assert summary["deleted"] == 1 and summary["freed_mb"] > 0 and registry.versions("demo") == [current]


def _bytes(*roots: Path) -> int:
    return sum(p.stat().st_size for root in roots for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_disk_stays_flat_over_nightly_retrains_with_gc_after_each(tmp_path: Path) -> None:
    over = tiny_overrides(tmp_path, **{"train.epochs": 1})
    rules = {"retention.published_runs_hours": 0, "retention.unpromoted_days": 0, "retention.keep_history": 1}
    nights = []
    for _ in range(5):
        retrain("demo", over, return_state=True)  # promoted or not: either way a version is published
        gc("demo", {**over, **rules}, cache_dir=str(tmp_path / "cache"))
        nights.append(_bytes(tmp_path / "runs", tmp_path / "store"))
    registry = Registry(open_store(over["storage.uri"]))
    assert len(registry.versions("demo")) <= 2  # production and at most one earlier
    assert not [p for p in (tmp_path / "runs" / "demo").iterdir() if (p / "published.json").exists()]
    assert nights[4] <= 1.2 * nights[1], nights
    print("bytes after each night:", nights)
