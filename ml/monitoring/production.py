"""The production version a production flow runs with, downloaded once per version, and its settings
resolved once: the version's saved monitor, labeling and alerts sections with the run's overrides.

    production = load_production(registry, "demo", PRODUCTION_CACHE)
    settings = resolve_settings(production, {"monitor.window": "1d"}, MONITOR_SECTIONS)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.config.production import AlertConfig, LabelingConfig, MonitorConfig
from ml.config.run import apply_overrides
from ml.core.files import sha256_file
from ml.export.onnx import IncompatibleModel
from ml.monitoring.reference import PROJECTION_FILE, REFERENCE_FILE
from ml.monitoring.scoring import OnnxClassifier, Projection
from ml.registry.versions import MODEL_FILE, PRODUCTION, Registry, RegistryError

PRODUCTION_CACHE = Path(".visionflow/cache/production")  # downloaded production versions, one folder each


@dataclass
class Production:
    """The production version of a model, downloaded: what scoring and monitoring need."""

    model: str
    version: str
    onnx: str
    projection: str | None
    reference: str | None  # None: published before drift monitoring existed
    classes: list[str]
    image_size: int | None  # None: a segmenter (any size, tiled)
    channels: int
    metrics: dict[str, Any]  # the version's validation metrics
    config: dict[str, Any]  # the version's resolved RunConfig (as saved)
    threshold: float | None = None  # a binary model's decision threshold (eval.decision); None: argmax

    @property
    def kind(self) -> str:
        """model.task of the version (ml.core.kinds.KINDS)."""
        return self.config.get("model", {}).get("task", "classify")

    def classifier(self, threads: int = 0) -> OnnxClassifier:
        if self.image_size is None:
            raise IncompatibleModel(
                f"{self.model} {self.version} is a segmenter (model.task=segment), not a classifier: "
                "score it with ml.monitoring.rows.prediction_rows"
            )
        projection = Projection.load(Path(self.projection)) if self.projection else None
        return OnnxClassifier(
            Path(self.onnx), self.classes, self.image_size, self.channels, projection, threads, self.threshold
        )


def _fetch(registry: Registry, model: str, version: str, name: str, dest: Path, sha256: str | None = None) -> Path:
    """A version file, downloaded once into dest (versions are immutable); model.onnx is checked by sha256."""
    if not dest.is_file() or (sha256 and sha256_file(dest) != sha256):
        registry.fetch(model, version, name, dest)
    if sha256 and sha256_file(dest) != sha256:
        raise RegistryError(f"{registry.version_uri(model, version)}/{name} does not match its sha256 {sha256}")
    return dest


def load_production(registry: Registry, model: str, cache_dir: Path) -> Production:
    """Download the production version's model, projection and reference into cache_dir/<model>/<version>/."""
    alias = registry.get_alias(model, PRODUCTION)
    if alias is None:
        versions = len(registry.versions(model))
        why = f"{versions} version(s), none promoted: no gate has passed yet" if versions else "no versions at all"
        raise RegistryError(f"model {model!r} has no {PRODUCTION} version in {registry.store.url()} ({why})")
    return load_version(registry, model, alias["version"], cache_dir)


def load_version(registry: Registry, model: str, version: str, cache_dir: Path) -> Production:
    """One version's model, projection and reference, downloaded (sha256-checked) into cache_dir/<model>/<version>/
    once: a scoring shard on another machine loads exactly the version its flow started with."""
    meta = registry.metadata(model, version)
    folder = cache_dir / model / version

    def optional(name: str) -> str | None:
        return str(_fetch(registry, model, version, name, folder / name)) if name in meta["files"] else None

    onnx = _fetch(registry, model, version, MODEL_FILE, folder / MODEL_FILE, meta["onnx_sha256"])
    size = meta["input"]
    return Production(
        model,
        version,
        str(onnx),
        optional(PROJECTION_FILE),
        optional(REFERENCE_FILE),
        meta["classes"],
        int(size["height"]) if "height" in size else None,
        int(size["channels"]),
        meta.get("metrics", {}),
        meta.get("config", {}),
        (meta.get("decision") or {}).get("threshold"),
    )


@dataclass(frozen=True)
class Scope:
    """The sections a production flow may override, and what for (the message of an override outside them)."""

    sections: tuple[str, ...]
    purpose: str


SCORING = Scope(("monitor", "alerts"), "scoring and monitoring")
LABELING = Scope(("labeling", "monitor"), "selecting for labeling")  # monitor: batch_size, workers, sharding


@dataclass(frozen=True)
class ProductionSettings:
    """A production flow's settings, resolved once (resolve_settings) and passed to every task and shard."""

    version: str  # the production version they were resolved for; "" when checked before one is loaded
    monitor: MonitorConfig
    labeling: LabelingConfig
    alerts: AlertConfig


def resolve_settings(
    version_config: dict[str, Any], overrides: dict[str, Any], scope: Scope, version: str = ""
) -> ProductionSettings:
    """The version's saved `monitor`, `labeling` and `alerts` sections with `overrides` (dotted keys, only of
    `scope`'s sections) applied, pydantic-validated."""
    if unknown := sorted({key.split(".")[0] for key in overrides} - set(scope.sections)):
        only = " and ".join(f"{s}.*" for s in scope.sections)
        raise ValueError(f"overrides {unknown}: only {only} apply to {scope.purpose}")
    saved = {s: version_config.get(s, {}) for s in ("monitor", "labeling", "alerts")}
    merged = apply_overrides(saved, overrides)
    return ProductionSettings(
        version,
        MonitorConfig.model_validate(merged["monitor"]),
        LabelingConfig.model_validate(merged["labeling"]),
        AlertConfig.model_validate(merged["alerts"]),
    )
