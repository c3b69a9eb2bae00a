"""Model registry over an ArtifactStore: immutable versions, movable aliases.

Layout in the store::

    models/<model>/versions/<version>/model.onnx | metadata.json | report.md | plots/*.png | ...
    models/<model>/aliases/<alias>.json        {version, sha256, promoted_at, previous, history[, rolled_back_from]}

``previous`` is the version the alias pointed at just before; ``history`` the distinct earlier versions it
pointed at, newest last, that a plain rollback may return to (a rollback drops the version it leaves, so a
second rollback goes further back instead of forward again).

Two commit points, so a crash never leaves a half-visible state:
- a version exists once its ``metadata.json`` exists. ``publish`` writes it last, after every file is uploaded
  and model.onnx's sha256 is verified by reading it back. Versions without it (an interrupted publish) are
  never listed and cannot be aliased.
- an alias moves only through ``ArtifactStore.write_if`` (compare-and-swap on the token read with it), so two
  runs that both read the alias cannot both move it: the loser gets ``AliasConflict``.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml.core.files import sha256_file
from ml.registry.store import ArtifactStore, ConflictError, ObjectNotFound, check_key

PRODUCTION = "production"
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()  # set_alias(expected_version=ANY): do not check what the alias points at
_id_lock = threading.Lock()
_last_us = 0


class RegistryError(RuntimeError):
    """A registry operation that cannot proceed (a failed upload check, nothing to roll back to)."""


class VersionNotFound(ObjectNotFound, ValueError):
    """No complete version: a failed lookup (KeyError) and, for set_alias, an invalid argument (ValueError)."""


class AliasConflict(ConflictError):
    """The alias was moved by someone else since it was read, or is not where the caller expected."""


def _name(kind: str, value: str) -> str:
    if not value or "/" in value or value.startswith(".") or value != value.strip():
        raise ValueError(f"invalid {kind} name {value!r}: want one path segment, not starting with '.'")
    return value


def _now() -> str:
    return datetime.now(UTC).isoformat()


def alias_history(record: dict[str, Any]) -> list[str]:
    """Earlier versions of an alias record, newest last; a plain rollback goes to the last one. Records written
    before ``history`` existed know only their ``previous``."""
    return record.get("history", [record["previous"]] if record["previous"] else [])


def _next_history(earlier: list[str], leaving: str | None, version: str, rollback: bool) -> list[str]:
    """History after moving from ``leaving`` to ``version``: a promotion pushes ``leaving``, a rollback pops it
    and everything after ``version``, so neither the version rolled back from nor later ones come back."""
    if rollback:
        return earlier[: earlier.index(version)] if version in earlier else earlier
    kept = [v for v in earlier if v != version]
    return kept + [leaving] if leaving else kept


def check_gate(model: str, version: str, metadata: dict[str, Any], force: bool, action: str) -> None:
    """Refuse to put a version whose recorded gate failed into production unless forced: a person overrides it."""
    gate = metadata.get("gate") or {}
    if not gate.get("passed", True) and not force:
        raise RegistryError(f"{model} {version}: its gate {gate.get('verdict')}; pass --force to {action} it anyway")


class Registry:
    """Versions and aliases of models in one store (``Registry(open_store(uri))``)."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @staticmethod
    def new_version_id() -> str:
        """UTC time to the microsecond + random hex: sortable, unique without coordination, monotonic here."""
        global _last_us
        with _id_lock:
            us = _last_us = max(time.time_ns() // 1000, _last_us + 1)
        stamp = datetime.fromtimestamp(us // 1_000_000, UTC)
        return f"{stamp:%Y%m%dT%H%M%S}.{us % 1_000_000:06d}Z-{secrets.token_hex(3)}"

    @staticmethod
    def version_time(version: str) -> datetime:
        """When a version was published, from its id (new_version_id): ages without reading metadata.json."""
        return datetime.strptime(version[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)

    def _key(self, model: str, version: str, name: str = "") -> str:
        return f"models/{_name('model', model)}/versions/{_name('version', version)}/{name}"

    def version_uri(self, model: str, version: str) -> str:
        """Where a version's files are (file:// or s3:// URI of its folder)."""
        return self.store.url(self._key(model, version).rstrip("/"))

    def _alias_key(self, model: str, alias: str) -> str:
        return f"models/{_name('model', model)}/aliases/{_name('alias', alias)}.json"

    def publish(self, model: str, files: dict[str, Path], metadata: dict[str, Any]) -> str:
        """Upload ``files`` (name -> local path; must hold model.onnx) as a new version; returns its id."""
        files = {check_key(name): Path(path) for name, path in files.items()}
        if MODEL_FILE not in files or METADATA_FILE in files:
            raise ValueError(f"publish {model!r}: files must include {MODEL_FILE} and not {METADATA_FILE}")
        if missing := [f"{n} -> {p}" for n, p in files.items() if not p.is_file()]:
            raise FileNotFoundError(f"publish {model!r}: not files: {', '.join(missing)}")
        version = self.new_version_id()
        sha = sha256_file(files[MODEL_FILE])
        meta = {**metadata, "version": version, "onnx_sha256": sha, "created_at": _now(), "files": sorted(files)}
        body = json.dumps(meta, indent=2, sort_keys=True).encode()  # fail on unserialisable metadata before uploading
        for name, path in files.items():
            self.store.put_file(self._key(model, version, name), path)
        with tempfile.TemporaryDirectory() as tmp:
            uploaded = sha256_file(self.store.get_file(self._key(model, version, MODEL_FILE), Path(tmp) / MODEL_FILE))
        if uploaded != sha:
            url = self.store.url(self._key(model, version, MODEL_FILE))
            raise RegistryError(f"{url}: sha256 {uploaded} after upload, expected {sha}; version left incomplete")
        self.store.put_bytes(self._key(model, version, METADATA_FILE), body)  # commit point of the version
        return version

    def versions(self, model: str) -> list[str]:
        """Complete versions (metadata.json present), oldest first."""
        prefix = f"models/{_name('model', model)}/versions/"
        tails = (key[len(prefix) :].split("/") for key in self.store.list(prefix))
        return sorted(t[0] for t in tails if len(t) == 2 and t[1] == METADATA_FILE)

    def models(self) -> list[str]:
        return sorted({key.split("/")[1] for key in self.store.list("models/") if key.count("/") >= 3})

    def metadata(self, model: str, version: str) -> dict[str, Any]:
        key = self._key(model, version, METADATA_FILE)
        try:
            return self.store.get_json(key)
        except ObjectNotFound:
            raise VersionNotFound(
                f"model {model!r} has no complete version {version!r} (no {self.store.url(key)})"
            ) from None

    def fetch(self, model: str, version: str, name: str, dest: Path) -> Path:
        """Download one file of a complete version to ``dest``."""
        files = self.metadata(model, version)["files"]
        if name not in [*files, METADATA_FILE]:
            raise ObjectNotFound(f"model {model!r} version {version!r} has no file {name!r}; it has {files}")
        return self.store.get_file(self._key(model, version, name), dest)

    def aliases(self, model: str) -> dict[str, dict[str, Any]]:
        """Every alias of `model` (production and any other) and its record."""
        prefix = self._alias_key(model, "x")[: -len("x.json")]
        names = (key[len(prefix) : -len(".json")] for key in self.store.list(prefix) if key.endswith(".json"))
        return {name: record for name in names if (record := self.get_alias(model, name)) is not None}

    def get_alias(self, model: str, alias: str) -> dict[str, Any] | None:
        found = self.store.read_versioned(self._alias_key(model, alias))
        return json.loads(found[0]) if found else None

    def set_alias(self, model: str, alias: str, version: str, expected_version: str | None | Any = ANY) -> dict:
        """Point ``alias`` at a complete ``version``; the single commit point of a promotion.

        ``expected_version`` (None: the alias must not exist yet) guards against acting on a stale read; a
        concurrent move between our read and write is caught by the store's compare-and-swap. Both raise
        AliasConflict. Moving an alias to where it already points is a no-op that returns the current record.
        """
        return self._move(model, alias, version, expected_version)

    def _move(
        self, model: str, alias: str, version: str, expected_version: str | None | Any, rollback: bool = False
    ) -> dict:
        """set_alias; ``rollback`` pops ``history`` back past ``version`` instead of pushing the current one."""
        key = self._alias_key(model, alias)
        sha = self.metadata(model, version)["onnx_sha256"]  # VersionNotFound (a ValueError) if incomplete
        found = self.store.read_versioned(key)
        current = json.loads(found[0]) if found else None
        current_version = current["version"] if current else None
        if expected_version is not ANY and expected_version != current_version:
            where = self.store.url(key)
            raise AliasConflict(f"{model}@{alias} points at {current_version}, not {expected_version} ({where})")
        if current and current_version == version:
            return current
        record = {"version": version, "sha256": sha, "promoted_at": _now(), "previous": current_version}
        record["history"] = _next_history(alias_history(current) if current else [], current_version, version, rollback)
        if rollback:
            record["rolled_back_from"] = current_version
        try:
            self.store.write_if(key, json.dumps(record, indent=2).encode(), found[1] if found else None)
        except ConflictError as e:
            raise AliasConflict(f"{model}@{alias} was moved by someone else while moving it to {version}: {e}") from e
        return record

    def promote(self, model: str, version: str, expected_version: str | None | Any = ANY) -> dict:
        return self.set_alias(model, PRODUCTION, version, expected_version)

    def rollback(self, model: str, version: str | None = None, force: bool = False) -> dict:
        """Move production to ``version``, or back to the newest earlier production version it was not rolled
        back from; a version whose gate failed needs ``force``, as for a promotion."""
        current = self.get_alias(model, PRODUCTION)
        if current is None:
            raise RegistryError(f"model {model!r} has no {PRODUCTION} alias to roll back (in {self.store.url()})")
        earlier = alias_history(current)
        target = version or (earlier[-1] if earlier else None)
        if target is None:
            left = f" (it was rolled back from {current['rolled_back_from']})" if "rolled_back_from" in current else ""
            raise RegistryError(f"model {model!r}: {PRODUCTION} ({current['version']}) has no previous version{left}")
        check_gate(model, target, self.metadata(model, target), force, "roll back to")
        return self._move(model, PRODUCTION, target, current["version"], rollback=True)
