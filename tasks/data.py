"""Data tasks: index, check and split the dataset (the foundation's basic validation)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from ml.config import RunConfig
from ml.data.prepare import PreparedData, prepare_dataset


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(cfg: RunConfig, run_dir: Path) -> PreparedData:
    """Fails the run (DatasetError naming files and rule) before any training starts."""
    return prepare_dataset(cfg.data, run_dir)
