"""Retention for one preset's model: run folders, registry versions, prediction logs, reports, the download cache.

    python -m flows.gc --preset demo --dry-run     # lists what would go, why, and its size; deletes nothing
    python -m flows.gc --preset demo
    python -m flows.gc --preset demo --set retention.keep_history=5 --set retention.failed_runs_days=3

Nightly as the `gc/<preset>` deployments (prefect.yaml). What is kept and for how long: the `retention:` section
(ml/config/retention.py); never a version an alias points at. The last stdout line is JSON; exit code 0 when
done, 1 when the store failed, 2 for a bad configuration.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow

from flows.cli.args import overrides_of, print_summary, resolve_or_exit, result_or_report, run_parser
from flows.cli.params import Overrides, Preset
from flows.cli.runs import run_named_by
from ml.config.run import load_config
from ml.monitoring.production import PRODUCTION_CACHE
from ml.registry.retention import plan_table
from tasks.retention import delete_planned, plan_deletions, publish_plan


@flow(name="gc", flow_run_name=run_named_by("preset"), log_prints=True)
def gc(
    preset: Preset = "demo", overrides: Overrides = None, dry_run: bool = False, cache_dir: str = str(PRODUCTION_CACHE)
) -> dict[str, Any]:
    """Delete what the preset's retention rules let go (or only list it).

    Args:
        preset: deployments/presets/<preset>.yaml: the model, its store, run folders and retention rules.
        overrides: dotted config keys over the preset, e.g. {"retention.keep_history": 5}.
        dry_run: list what would be deleted, with sizes, and delete nothing.
        cache_dir: where scoring and monitoring download production versions (their --cache-dir).
    """
    cfg = load_config(preset, overrides)  # a bad key or value fails here, before any work
    # 1. plan: every run folder, version, log day, report and cached version the rules let go, with why and size
    plan = plan_deletions(cfg, Path(cache_dir))
    # 2. delete, versions metadata.json first (never half-listed), unless a dry run
    deleted = plan if dry_run else delete_planned(cfg, plan)
    publish_plan(cfg.name, deleted, dry_run)
    return {
        "model": cfg.name,
        "dry_run": dry_run,
        "deleted": 0 if dry_run else len(deleted),
        "planned": len(plan),
        "freed_mb": 0.0 if dry_run else round(sum(d.size for d in deleted) / 1e6, 3),
        "planned_mb": round(sum(d.size for d in plan) / 1e6, 3),
        "by_kind": {kind: sum(d.kind == kind for d in deleted) for kind in sorted({d.kind for d in deleted})},
        "items": plan_table(deleted),  # kind, MB, what, why: what went, or would go in a dry run
    }


def main(argv: list[str] | None = None) -> int:
    p = run_parser(__doc__)
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    p.add_argument("--cache-dir", default=str(PRODUCTION_CACHE), help="where production versions are downloaded")
    args = p.parse_args(argv)
    overrides = overrides_of(args)
    cfg = resolve_or_exit(args.preset, overrides)
    state = gc(args.preset, overrides, args.dry_run, args.cache_dir, return_state=True)
    summary = result_or_report(state, "gc", {"model": cfg.name})
    if summary is None:
        return 1
    verb = "would delete" if args.dry_run else "deleted"
    for row in summary.pop("items"):
        print(f"{verb} {row['kind']} {row['what']} ({row['MB']} MB): {row['why']}")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
