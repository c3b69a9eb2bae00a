"""Reporting task: Prefect artifacts under keys stable per model, so the UI shows each model's history."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from ml.config.run import RunConfig
from ml.evaluation.gate import GateReport
from ml.evaluation.record import Evaluation
from ml.registry.records import RunRecords
from ml.registry.report import gate_rows, metric_rows, run_markdown


@task(name="write-report", cache_policy=NO_CACHE)
def write_report(cfg: RunConfig, records: RunRecords, run_dir: Path) -> Path:
    """The run's report.md on disk (it is stored with the version): verdict, gate, metrics, the run's facts."""
    path = run_dir / "report.md"
    path.write_text(run_markdown(cfg.name, cfg.model.task, records))
    return path


@task(name="publish-artifacts", cache_policy=NO_CACHE)
def publish_artifacts(model: str, evaluation: Evaluation, gate: GateReport, summary_md: str) -> None:
    create_table_artifact(
        key=f"{model}-metrics",
        table=metric_rows(evaluation.metrics),
        description=f"{model}: validation metrics per class",
    )
    if "test" in evaluation.metrics:
        test = metric_rows(evaluation.metrics["test"])
        create_table_artifact(key=f"{model}-test-metrics", table=test, description=f"{model}: test metrics (gated)")
    if gate.rules:
        create_table_artifact(key=f"{model}-gate", table=gate_rows(gate), description=f"{model}: gate rules")
    create_markdown_artifact(key=f"{model}-summary", markdown=summary_md, description=f"{model}: retrain summary")
