"""Registry tasks: read the champion, upload the version, then move `production` only if the gate passed."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from ml.classifier import Evaluation
from ml.config import RunConfig
from ml.data.prepare import PreparedData
from ml.export import ExportResult
from ml.gate import ChampionEval, GateReport
from ml.labeling import labels_from_batches
from ml.publish import Promotion, PublishResult, model_input, promote_if_passed, publish_version, version_metadata
from ml.reference import ReferenceFiles
from ml.registry import PRODUCTION, Registry
from ml.storage import open_store
from ml.train import TrainResult
from tasks.alerts import flow_run_url


def open_registry(cfg: RunConfig) -> Registry:
    return Registry(open_store(cfg.storage.uri, cfg.storage.endpoint_url))


@task(name="read-production", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def read_production(cfg: RunConfig) -> str | None:
    """The version `production` points at now: the champion this run is judged against and must still replace."""
    alias = open_registry(cfg).get_alias(cfg.name, PRODUCTION)
    return alias["version"] if alias else None


@task(name="publish", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def publish_model(
    cfg: RunConfig,
    prepared: PreparedData,
    trained: TrainResult,
    evaluation: Evaluation,
    exported: ExportResult,
    gate: GateReport,
    champion: ChampionEval,
    latency_ms: float,
    report_md: Path,
    reference: ReferenceFiles | None = None,
) -> PublishResult:
    """Upload the version, gate verdict included. A retry after a failed upload starts a new version; the
    half-written one is never listed. `reference` (tasks.monitoring.build_reference) adds the drift reference."""
    run_dir = Path(exported.path).parent
    (run_dir / "config.json").write_text(cfg.model_dump_json(indent=1))
    files = {
        "model.onnx": Path(exported.path),
        "config.json": run_dir / "config.json",
        "metrics.json": Path(evaluation.metrics_path),
        "history.json": run_dir / "history.json",
        "report.md": report_md,
        **{f"plots/{name}.png": Path(p) for name, p in evaluation.plots.items()},
        **(reference.files() if reference else {}),
    }
    metadata = version_metadata(
        cfg,
        metrics=evaluation.scalars(),
        classes=prepared.classes,
        input=model_input(cfg, exported.outputs),
        dataset={"root": prepared.root, "fingerprint": prepared.fingerprint, "counts": prepared.counts},
        labels_from_batches=labels_from_batches(open_registry(cfg).store, cfg.name, prepared),
        training={k: v for k, v in trained.to_dict().items() if k != "history"},
        export=exported.to_dict(),
        decision=evaluation.metrics.get("decision"),  # a binary threshold: scoring predicts with it
        cost={"model_mb": exported.size_bytes / 1e6, "latency_ms": latency_ms},
        gate=gate.to_dict(),
        champion=champion.to_dict(),
        run={"flow_run_id": flow_run.get_id(), "url": flow_run_url()},
    )
    return publish_version(open_registry(cfg), cfg, files, metadata)


@task(name="promote", cache_policy=NO_CACHE)
def promote_model(cfg: RunConfig, version: str, gate: GateReport, expected_production: str | None) -> Promotion:
    """No retries: losing the race to another run is final (the champion this run beat is gone)."""
    promotion = promote_if_passed(open_registry(cfg), cfg.name, version, gate, expected_production)
    if promotion.lost_to:
        get_run_logger().warning(promotion.message)
    else:
        get_run_logger().info(promotion.message)
    return promotion
