"""Data task: profile the dataset, run its Great Expectations suite, publish the report, split."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed, State

from ml.config.run import RunConfig
from ml.data.prepare import PreparedData
from ml.data.validation import DataValidationError, validate_dataset


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(cfg: RunConfig, run_dir: Path) -> PreparedData | State:
    """The split, or a Failed state carrying DataValidationError (each broken rule with its files): a verdict on
    the data, ended without a traceback (with return_state=True a flow can end on it; called plainly, it raises).

    Publishes `<model>-data-validation` (markdown: failures, or summary stats) and, when it passed,
    `<model>-class-balance` (table).
    """
    report = validate_dataset(cfg, run_dir)
    create_markdown_artifact(
        key=f"{cfg.name}-data-validation",
        markdown=report.markdown(),
        description=f"{cfg.name}: data validation ({'passed' if report.passed else 'FAILED'})",
    )
    if not report.passed:
        err = DataValidationError(report)
        return Failed(message=str(err).splitlines()[0].lstrip("# "), data=err)
    create_table_artifact(
        key=f"{cfg.name}-class-balance", table=report.classes, description=f"{cfg.name}: images per class and split"
    )
    return report.prepared
