"""Active-learning tasks: pick the pool images worth labeling into a Label Studio batch, and show it."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ml.labeling.batch import (
    BatchRequest,
    KnownImages,
    LabelingBatch,
    finish_batch,
    merge_shortlists,
    select_batch,
    shortlist_of,
)
from ml.labeling.selection import Shortlist
from ml.monitoring.log import ScoringJob
from ml.monitoring.production import Production
from ml.monitoring.scoring import ImageRef, referenced_images
from ml.registry.storage import open_store
from tasks.registry import STORE_RETRIES


@task(name="choose-batch", cache_policy=NO_CACHE)
def choose_batch(production: Production, job: ScoringJob) -> LabelingBatch:
    """Score the pool, skip known images, write tasks.json + selection.csv under labeling/<model>/<batch>/."""
    lab, mon, store = job.settings.labeling, job.settings.monitor, open_store(job.store, job.endpoint_url)
    return _logged(select_batch(store, production, BatchRequest(job.source, lab, mon, job.run, job.endpoint_url)))


@task(name="shortlist-shard", cache_policy=NO_CACHE, **STORE_RETRIES)
def shortlist_shard(job: ScoringJob, refs: list[ImageRef], shard: int, skip: frozenset[str]) -> Shortlist:
    """One shard of a large pool, wherever the task runner puts it: its images' shortlist (known ones skipped)."""
    lab, mon, images = job.settings.labeling, job.settings.monitor, referenced_images(refs, job.endpoint_url)
    return shortlist_of(job.production(), images, lab, mon, skip, seed_offset=shard)


@task(name="write-batch", cache_policy=NO_CACHE)
def write_shortlisted(
    production: Production, job: ScoringJob, shortlists: list[Shortlist], known: KnownImages, start: float
) -> LabelingBatch:
    """The shards' shortlists merged, the batch picked from them and written, as choose-batch does for one."""
    lab, mon, store = job.settings.labeling, job.settings.monitor, open_store(job.store, job.endpoint_url)
    merged = merge_shortlists(shortlists, lab)
    req = BatchRequest(job.source, lab, mon, job.run, job.endpoint_url)
    selected = finish_batch(store, production, req, merged, known, start)
    return _logged(selected)


def _logged(selected: LabelingBatch) -> LabelingBatch:
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
        log.warning(
            "no training image files of %s here (data.root missing, or .npy rows): only earlier batches were skipped",
            selected.version,
        )
    return selected


@task(name="labeling-artifact", cache_policy=NO_CACHE)
def publish_batch_artifact(batch: LabelingBatch) -> None:
    """`<model>-labeling`: the batch's counts, links and thumbnails."""
    create_markdown_artifact(
        key=f"{batch.model}-labeling", markdown=batch.markdown(), description=f"{batch.model}: labeling batch"
    )
