"""Publishing task: upload the version, then move `production` only if the gate passed."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from ml.classifier import Evaluation
from ml.config import RunConfig
from ml.data.prepare import PreparedData
from ml.export import ExportResult
from ml.gate import GateReport
from ml.publish import PublishResult, publish_version, version_metadata
from ml.registry import Registry
from ml.storage import open_store
from ml.train import TrainResult


def open_registry(cfg: RunConfig) -> Registry:
    return Registry(open_store(cfg.storage.uri, cfg.storage.endpoint_url))


@task(name="publish", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def publish_model(
    cfg: RunConfig,
    prepared: PreparedData,
    trained: TrainResult,
    evaluation: Evaluation,
    exported: ExportResult,
    gate: GateReport,
    report_md: Path,
) -> PublishResult:
    """A retry after a failed upload starts a new version; the half-written one is never listed."""
    run_dir = Path(exported.path).parent
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=1))
    files = {
        "model.onnx": Path(exported.path),
        "config.json": run_dir / "config.json",
        "metrics.json": Path(evaluation.metrics_path),
        "history.json": run_dir / "history.json",
        "report.md": report_md,
        **{f"plots/{name}.png": Path(p) for name, p in evaluation.plots.items()},
    }
    metadata = version_metadata(
        cfg,
        metrics=evaluation.scalars(),
        classes=prepared.classes,
        input={
            "channels": cfg.data.channels,
            "height": cfg.data.image_size,
            "width": cfg.data.image_size,
            "range": "[0,1] float32 NCHW",
            "outputs": ["logits", "probs"],
        },
        dataset={"root": prepared.root, "fingerprint": prepared.fingerprint, "counts": prepared.counts},
        training={k: v for k, v in trained.to_dict().items() if k != "history"},
        export=exported.to_dict(),
        gate=gate.to_dict(),
    )
    return publish_version(open_registry(cfg), cfg, files, metadata, gate)
