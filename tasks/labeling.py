"""Active-learning tasks: pick the pool images worth labeling into a Label Studio batch, and show it."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ml.labeling import LabelingBatch, labeling_settings, select_batch
from ml.reference import Production
from ml.storage import open_store


@task(name="choose-batch", cache_policy=NO_CACHE)
def choose_batch(
    production: Production,
    pool: str,
    store: str,
    overrides: dict[str, Any],
    batch: str,
    endpoint_url: str | None = None,
) -> LabelingBatch:
    """Score the pool, skip known images, write tasks.json + selection.csv under labeling/<model>/<batch>/."""
    lab, mon = labeling_settings(production.config, overrides)
    selected = select_batch(open_store(store, endpoint_url), production, pool, lab, mon, batch, endpoint_url)
    log = get_run_logger()
    log.info(
        "%d of %d pool images selected (%s, %s) in %.1f s; %d known, %d unreadable",
        selected.selected,
        selected.scored,
        selected.strategy,
        selected.measure,
        selected.seconds,
        selected.known,
        selected.unreadable,
    )
    if selected.training_images is None:
        log.warning("training data of %s not found here: only earlier batches were skipped", production.version)
    return selected


@task(name="labeling-artifact", cache_policy=NO_CACHE)
def publish_batch_artifact(batch: LabelingBatch) -> None:
    """`<model>-labeling`: the batch's counts, links and thumbnails."""
    create_markdown_artifact(
        key=f"{batch.model}-labeling", markdown=batch.markdown(), description=f"{batch.model}: labeling batch"
    )
