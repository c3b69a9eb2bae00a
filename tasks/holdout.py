"""Scoring a registered version on a folder it never saw, with its metrics as a Prefect table artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from ml.registry.holdout import evaluate_version
from ml.registry.report import metric_rows
from ml.registry.storage import open_store
from ml.registry.versions import Registry


@task(name="evaluate-version", cache_policy=NO_CACHE)
def evaluate_registered(
    model: str, version: str | None, data: Path, store: str, workdir: Path, endpoint_url: str | None = None
) -> dict[str, Any]:
    """`<model>-holdout`: per class (classifier) or per image (segmenter) rows of the version on `data`."""
    result = evaluate_version(Registry(open_store(store, endpoint_url)), model, version, data, workdir)
    create_table_artifact(
        key=f"{model}-holdout",
        table=metric_rows(result["metrics"]),
        description=f"{model} {result['version']} on {data}",
    )
    return result
