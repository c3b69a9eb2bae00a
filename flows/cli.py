"""The command line shared by the flows: `--preset NAME --set a.b=v ... [--store URI]`.

The config is resolved before a flow starts, so a wrong key or value fails at once with pydantic's
message and no work is done.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from ml.config import RunConfig, load_config, parse_override


def run_parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc,
    )
    p.add_argument("--preset", default="demo", help="deployments/presets/<NAME>.yaml (default: demo)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, repeatable: --set train.epochs=2 --set gate.min.accuracy=0.9",
    )
    p.add_argument("--store", help="artifact store URI (file://DIR or s3://bucket/prefix); = --set storage.uri=")
    return p


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    out = dict(parse_override(o) for o in args.overrides)
    if args.store:
        out["storage.uri"] = args.store
    return out


def resolve_or_exit(preset: str, overrides: dict[str, Any]) -> RunConfig:
    """Load the config or exit 2 with the reason (pydantic's message for bad keys and values)."""
    try:
        return load_config(preset, overrides)
    except (ValidationError, ValueError, FileNotFoundError) as err:
        print(f"invalid configuration (preset {preset!r}):\n{err}", file=sys.stderr)
        raise SystemExit(2) from None


def print_summary(summary: dict[str, Any]) -> None:
    """The last line on stdout: one JSON object for scripts."""
    print(json.dumps(summary, default=str), flush=True)
