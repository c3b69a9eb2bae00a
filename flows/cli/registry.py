"""The model registry for people: list versions, show one, promote, roll back.

    python -m flows.registry list demo
    python -m flows.registry show demo [VERSION]                # metadata.json (default: production's version)
    python -m flows.registry promote demo VERSION [--force]     # --force: even if its gate failed
    python -m flows.registry rollback demo [VERSION] [--force]  # default: the newest earlier production version
                                                                # (`list` marks it), never one rolled back from
    python -m flows.registry list demo --store s3://bucket/prefix [--endpoint-url http://127.0.0.1:9000]

Moves of `production` are conditional on the alias not changing between read and write (as in the flow), so a
person and a nightly run cannot overwrite each other silently. Exit code 0 when done, 1 when refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flows.cli.args import add_store, doc_parser
from ml.registry.storage import open_store
from ml.registry.store import ObjectNotFound
from ml.registry.versions import PRODUCTION, AliasConflict, Registry, RegistryError, alias_history, check_gate

HEADLINE = ("accuracy", "macro_f1")


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a" if value is None else str(value)


def list_versions(registry: Registry, model: str) -> list[dict[str, str]]:
    """One row per complete version, oldest first, marked `production`, `previous` (where a plain rollback goes)
    and `rolled back from`."""
    alias = registry.get_alias(model, PRODUCTION) or {}
    earlier = alias_history(alias)[-1:] if alias else []
    marks = dict.fromkeys(earlier, "previous") | {alias.get("rolled_back_from"): "rolled back from"}
    marks[alias.get("version")] = PRODUCTION
    rows = []
    for version in registry.versions(model):
        meta = registry.metadata(model, version)
        metrics = meta.get("metrics", {})
        rows.append(
            {
                "version": version,
                "created_at": meta["created_at"][:19],
                **{name: _fmt(metrics.get(name)) for name in HEADLINE},
                "gate": (meta.get("gate") or {}).get("verdict", "n/a"),
                "alias": marks.get(version, ""),
            }
        )
    return rows


def _table(rows: list[dict[str, str]]) -> str:
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    lines = ["  ".join(k.ljust(w) for k, w in widths.items())]
    lines += ["  ".join(r[k].ljust(w) for k, w in widths.items()) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def promote(registry: Registry, model: str, version: str, force: bool = False) -> str:
    """Move `production` to `version`; a version whose recorded gate failed needs force=True."""
    check_gate(model, version, registry.metadata(model, version), force, "promote")
    current = (registry.get_alias(model, PRODUCTION) or {}).get("version")
    moved = registry.promote(model, version, expected_version=current)
    return f"{model}@{PRODUCTION}: {current} -> {moved['version']}"


def rollback(registry: Registry, model: str, version: str | None = None, force: bool = False) -> str:
    """Move `production` back (see Registry.rollback); a target whose recorded gate failed needs force=True."""
    current = (registry.get_alias(model, PRODUCTION) or {}).get("version")
    moved = registry.rollback(model, version, force)
    return f"{model}@{PRODUCTION}: {current} -> {moved['version']} (rolled back)"


def _parser() -> argparse.ArgumentParser:
    p = doc_parser(__doc__)
    p.add_argument("command", choices=["list", "show", "promote", "rollback"])
    p.add_argument("model")
    p.add_argument("version", nargs="?")
    add_store(p)
    p.add_argument("--force", action="store_true", help="promote/rollback: even onto a version whose gate failed")
    return p


def run(args: argparse.Namespace) -> str:
    registry = Registry(open_store(args.store, args.endpoint_url))
    if args.command == "list":
        rows = list_versions(registry, args.model)
        if not rows:  # a typo in the name, or the wrong store
            known = ", ".join(registry.models()) or "none"
            raise RegistryError(f"no versions in {registry.store.url()}; its models: {known}")
        return _table(rows)
    if args.command == "show":
        version = args.version or (registry.get_alias(args.model, PRODUCTION) or {}).get("version")
        if version is None:
            raise RegistryError(f"model {args.model!r} has no {PRODUCTION} version; name one (see `list`)")
        return json.dumps(registry.metadata(args.model, version), indent=2, sort_keys=True)
    if args.command == "promote":
        if not args.version:
            raise RegistryError("promote needs a VERSION (see `list`)")
        return promote(registry, args.model, args.version, args.force)
    return rollback(registry, args.model, args.version, args.force)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(run(args))
    except (RegistryError, AliasConflict, ObjectNotFound, ValueError) as err:
        print(f"{args.command} {args.model}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
