"""The command line shared by the flows: `--preset NAME --set a.b=v ... [--store URI]`.

The config is resolved before a flow starts, so a wrong key or value fails at once with pydantic's
message and no work is done.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from ml.config.publishing import DEFAULT_STORE
from ml.config.run import RunConfig, load_config, parse_override

STORE_PATTERN, URL_PATTERN = r"^(file|s3)://.+", r"^https?://"  # what ml.registry.storage.open_store and boto3 take

if TYPE_CHECKING:  # the registry CLI imports this module and needs no Prefect
    from prefect.states import State


def doc_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose --help shows the module docstring (examples included) as written, above the options, and
    whose usage line reads `python -m flows.<name>` when run that way (argparse would say `<name>.py`)."""
    script = Path(sys.argv[0])
    prog = f"python -m flows.{script.stem}" if script.suffix == ".py" and script.parent.name == "flows" else None
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def _override(value: str) -> str:
    try:
        parse_override(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def add_set(p: argparse.ArgumentParser, help: str) -> None:
    """--set KEY=VALUE, repeatable, collected in `overrides` (a malformed item exits 2)."""
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], type=_override, metavar="KEY=VALUE", help=help
    )


def existing(kind: Literal["folder", "file"], s3: bool = True) -> Callable[[str], str]:
    """argparse type: a path or file://PATH that must be an existing folder (or file), or, with `s3`, an
    s3:// URI as given; so a typo exits 2 before a flow run starts, and before its crash alert goes out."""

    def check(value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme == "s3" and s3:
            return value
        path = Path(unquote(parsed.netloc + parsed.path) if parsed.scheme == "file" else value)
        if not (path.is_dir() if kind == "folder" else path.is_file()):
            raise argparse.ArgumentTypeError(f"{value!r}: no such {kind}{' (or s3://BUCKET/PREFIX)' if s3 else ''}")
        return value

    return check


def _matching(pattern: str, what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not re.match(pattern, value):
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}")
        return value

    return check


def add_store(p: argparse.ArgumentParser) -> None:
    """--store and --endpoint-url: where the registry and logs are, for flows that take no preset (checked as
    the flows' parameters are, so a typo exits 2 before any work)."""
    store = _matching(STORE_PATTERN, "file://DIR or s3://bucket/prefix")
    url = _matching(URL_PATTERN, "an http(s):// URL")
    p.add_argument("--store", default=DEFAULT_STORE, type=store, help=f"artifact store URI (default {DEFAULT_STORE})")
    p.add_argument(
        "--endpoint-url", type=url, help="S3-compatible server (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)"
    )


def run_parser(doc: str | None) -> argparse.ArgumentParser:
    p = doc_parser(doc)
    p.add_argument("--preset", default="demo", help="deployments/presets/<NAME>.yaml (default: demo)")
    add_set(p, "dotted override, repeatable: --set train.epochs=2 --set gate.min.accuracy=0.9")
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


def result_or_report(state: State, what: str, context: dict[str, Any]) -> Any | None:
    """A finished flow run's result; for a failed one None, after printing why (stderr) and a JSON summary
    with the error (stdout's last line), so callers exit 1."""
    if state.is_completed():
        return state.result()
    err = state.result(raise_on_failure=False)
    print(f"{what} failed: {err}", file=sys.stderr)
    print_summary({**context, "error": str(err)})
    return None
