"""The command line the production flows share (score, monitor, select_for_labeling): the model in the registry,
its store, --set items checked against the flow's settings before any work, and the download cache."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError

from flows.cli.args import add_set, add_store, doc_parser
from ml.config.run import parse_override
from ml.monitoring.production import PRODUCTION_CACHE, SCORING, Scope, resolve_settings


def parser(doc: str | None, sections: str = "monitor.* or alerts.*") -> argparse.ArgumentParser:
    """--model, --store, --endpoint-url, --set (of `sections`) and --cache-dir: the options scoring, monitoring
    and selecting for labeling share."""
    p = doc_parser(doc)
    p.add_argument("--model", required=True, help="the model's name in the registry (its `production` is used)")
    add_store(p)
    add_set(p, f"{sections} override, repeatable")
    p.add_argument("--cache-dir", default=str(PRODUCTION_CACHE), help="where production versions are downloaded")
    return p


def overrides_or_exit(items: list[str], scope: Scope = SCORING, **extra: Any) -> dict[str, Any]:
    """Parse --set items and validate them against the defaults of `scope`'s sections before any work (exit 2
    when invalid): ml.monitoring.production.resolve_settings on an empty version config."""
    try:
        overrides = {**dict(parse_override(o) for o in items), **extra}
        resolve_settings({}, overrides, scope)
    except (ValidationError, ValueError) as err:
        print(f"invalid settings:\n{err}", file=sys.stderr)
        raise SystemExit(2) from None
    return overrides
