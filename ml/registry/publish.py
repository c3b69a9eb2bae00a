"""Publishing a trained run as a registry version; `production` moves only on a passed gate, conditionally."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ml.config.run import RunConfig
from ml.core.files import PROJECT_ROOT
from ml.evaluation.gate import GateReport
from ml.registry.champion import TRAINING_FILE, write_training_list
from ml.registry.records import RunRecords
from ml.registry.versions import PRODUCTION, AliasConflict, Registry


@dataclass
class PublishResult:
    model: str
    version: str
    version_uri: str  # where model.onnx, metadata.json and the plots are

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Promotion:
    promoted: bool
    production: str | None  # the version `production` points at after this run
    lost_to: str | None = None  # another run moved `production` here after this run read it
    message: str = ""

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


def run_files(
    cfg: RunConfig, records: RunRecords, report_md: Path, extra: dict[str, Path] | None = None
) -> dict[str, Path]:
    """A retrain's version files by their name in the version: model, config, metrics, history, report, plots,
    the training list later champion comparisons exclude (ml.registry.champion) and `extra` (a classifier's
    drift reference: ml.monitoring.reference.ReferenceFiles.files()). Writes config.json and training.txt."""
    run_dir = Path(records.exported.path).parent
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=1))
    return {
        "model.onnx": Path(records.exported.path),
        "config.json": run_dir / "config.json",
        "metrics.json": Path(records.evaluation.metrics_path),
        "history.json": run_dir / "history.json",
        "report.md": report_md,
        TRAINING_FILE: write_training_list(records.prepared, run_dir),
        **{f"plots/{name}.png": Path(p) for name, p in records.evaluation.plots.items()},
        **(extra or {}),
    }


def run_metadata(
    cfg: RunConfig, records: RunRecords, labels_from_batches: dict[str, int], run: dict[str, Any]
) -> dict[str, Any]:
    """A retrain's metadata.json: version_metadata with the data, training, export, cost, gate and champion
    records, the decision threshold scoring predicts with, and the flow run that made it."""
    prepared, evaluation, exported = records.prepared, records.evaluation, records.exported
    return version_metadata(
        cfg,
        metrics=evaluation.scalars(),
        classes=prepared.classes,
        input=model_input(cfg, exported.outputs),
        dataset={"root": prepared.root, "fingerprint": prepared.fingerprint, "counts": prepared.counts},
        labels_from_batches=labels_from_batches,
        training={k: v for k, v in records.trained.to_dict().items() if k != "history"},
        export=exported.to_dict(),
        decision=evaluation.metrics.get("decision"),  # a binary threshold: scoring predicts with it
        cost={"model_mb": exported.size_bytes / 1e6, "latency_ms": records.latency_ms},
        gate=records.gate.to_dict(),
        champion=records.champion.to_dict(),
        run=run,
    )


def model_input(cfg: RunConfig, outputs: list[str]) -> dict[str, Any]:
    """How to feed the exported model: a classifier takes a fixed size; a segmenter any size that is a multiple
    of 32 (pad first), and is run over large images in tiles as evaluation did."""
    common = {"channels": cfg.data.channels, "range": "[0,1] float32 NCHW", "outputs": outputs}
    if cfg.model.task == "segment":
        tile = cfg.eval.tile or cfg.data.crop_size
        return {"task": "segment", "size": "any multiple of 32", "tile": tile, "overlap": cfg.eval.overlap, **common}
    return {"task": "classify", "height": cfg.data.image_size, "width": cfg.data.image_size, **common}


def publish_version(
    registry: Registry, cfg: RunConfig, files: dict[str, Path], metadata: dict[str, Any]
) -> PublishResult:
    """Upload the complete version (listed only once every file is in and model.onnx's sha256 verified)."""
    version = registry.publish(cfg.name, files, metadata)
    return PublishResult(cfg.name, version, registry.version_uri(cfg.name, version))


def promote_if_passed(
    registry: Registry, model: str, version: str, gate: GateReport, expected_production: str | None
) -> Promotion:
    """Move `production` to `version` only if the gate passed AND it still points at `expected_production`.

    `expected_production` is what the run read before comparing against the champion: if another run promoted
    meanwhile, this candidate was judged against a stale champion, so it loses (AliasConflict) and says who won.
    """
    if not gate.passed:
        alias = registry.get_alias(model, PRODUCTION)
        return Promotion(False, alias and alias["version"], message=f"gate {gate.verdict}: {version} not promoted")
    try:
        registry.promote(model, version, expected_version=expected_production)
    except AliasConflict:
        winner = (registry.get_alias(model, PRODUCTION) or {}).get("version")
        run = (registry.metadata(model, winner).get("run") or {}) if winner else {}
        by = f" (flow run {run['flow_run_id']})" if run.get("flow_run_id") else ""
        message = (
            f"lost the promotion race: {model}@production moved from {expected_production} to {winner}{by} while "
            f"this run compared {version} against {expected_production}; {version} is published but not promoted"
        )
        return Promotion(False, winner, winner, message)
    return Promotion(True, version, message=f"{version} promoted (previous: {expected_production})")
