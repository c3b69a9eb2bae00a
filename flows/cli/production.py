"""The command line the production flows share (score, monitor, select_for_labeling): the model in the registry,
its store, --set items checked against the flow's settings before any work, and the download cache."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from flows.cli.args import add_set, add_store, doc_parser
from ml.config.run import parse_override
from ml.monitoring.log import monitor_settings
from ml.monitoring.reference import PRODUCTION_CACHE


def parser(doc: str | None, sections: str = "monitor.* or alerts.*") -> argparse.ArgumentParser:
    """--model, --store, --endpoint-url, --set (of `sections`) and --cache-dir: the options scoring, monitoring
    and selecting for labeling share."""
    p = doc_parser(doc)
    p.add_argument("--model", required=True, help="the model's name in the registry (its `production` is used)")
    add_store(p)
    add_set(p, f"{sections} override, repeatable")
    p.add_argument("--cache-dir", default=str(PRODUCTION_CACHE), help="where production versions are downloaded")
    return p


def overrides_or_exit(items: list[str], settings: Callable = monitor_settings, **extra: Any) -> dict[str, Any]:
    """Parse --set items and validate them with `settings` against the defaults before any work (exit 2 when
    invalid); `settings(version_config, overrides)` is ml.monitoring.log.monitor_settings or ml.labeling.batch's."""
    try:
        overrides = {**dict(parse_override(o) for o in items), **extra}
        settings({}, overrides)
    except (ValidationError, ValueError) as err:
        print(f"invalid settings:\n{err}", file=sys.stderr)
        raise SystemExit(2) from None
    return overrides
