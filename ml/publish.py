"""Publishing a trained run as a registry version; the `production` alias moves only on a passed gate."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ml.config import RunConfig
from ml.gate import GateReport, should_promote
from ml.registry import Registry

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class PublishResult:
    model: str
    version: str
    version_uri: str  # where model.onnx, metadata.json and the plots are
    promoted: bool
    production: str | None  # the version `production` points at after this run

    def to_dict(self) -> dict:
        return asdict(self)


def git_commit() -> str | None:
    """The project's commit, or None outside a git checkout (e.g. an installed wheel)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def version_metadata(cfg: RunConfig, **records: Any) -> dict[str, Any]:
    """What a version must carry to be understood and reproduced later: config, data, code, results."""
    return {
        "model": cfg.name,
        "config": cfg.model_dump(mode="json"),
        "git_commit": git_commit(),
        "environment": {"python": platform.python_version(), "torch": torch.__version__},
        **records,
    }


def publish_version(
    registry: Registry, cfg: RunConfig, files: dict[str, Path], metadata: dict[str, Any], gate: GateReport
) -> PublishResult:
    """Upload the complete version first; then, and only if the gate passed, move `production` to it."""
    version = registry.publish(cfg.name, files, metadata)
    promoted = should_promote(gate)
    if promoted:
        registry.promote(cfg.name, version)
    alias = registry.get_alias(cfg.name, "production")
    return PublishResult(
        model=cfg.name,
        version=version,
        version_uri=registry.version_uri(cfg.name, version),
        promoted=promoted,
        production=alias["version"] if alias else None,
    )
