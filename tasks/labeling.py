"""Active-learning tasks: pick the pool images worth labeling into a Label Studio batch, show it, push it to a
Label Studio server, and pull its annotations back into the training data."""

from __future__ import annotations

import dataclasses
import os

import httpx
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from ml.config.production import LabelingConfig
from ml.labeling.annotations import ImportedLabels
from ml.labeling.batch import (
    BatchRequest,
    KnownImages,
    LabelingBatch,
    finish_batch,
    merge_shortlists,
    select_batch,
    shortlist_of,
)
from ml.labeling.round_trip import Pull, import_pulled, pulled_tasks, push_to_studio
from ml.labeling.scored_pool import PoolFiles
from ml.labeling.selection import Shortlist
from ml.labeling.studio_api import StudioApi
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


def _network(task: object, task_run: object, state: State) -> bool:
    """Retry a lost connection or a timeout, not a missing key or an answer the server gave (StudioApi raises)."""
    return isinstance(state.result(raise_on_failure=False), httpx.TransportError)


def studio_api(lab: LabelingConfig) -> StudioApi:
    """A client of labeling.label_studio.url. The key is never in the repo or the config: $LABEL_STUDIO_API_KEY,
    else the Prefect Secret block labeling.label_studio.secret_block."""
    ls = lab.label_studio
    key = os.environ.get("LABEL_STUDIO_API_KEY")
    if not key:
        try:
            key = Secret.load(ls.secret_block).get()
        except ValueError as err:
            raise RuntimeError(
                f"labeling.label_studio.url is {ls.url} but no API key was found: set LABEL_STUDIO_API_KEY, or "
                f"create the Prefect Secret block {ls.secret_block!r} (labeling.label_studio.secret_block)"
            ) from err
    return StudioApi(str(ls.url), key, ls.timeout_s)


@task(name="push-batch", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=_network)
def push_batch(production: Production, job: ScoringJob, batch: LabelingBatch) -> LabelingBatch:
    """The written batch into the model's Label Studio project (created, with local storage for a folder pool,
    when missing); the project and task ids go into the store beside it (label_studio.json) and into the record."""
    lab, store = job.settings.labeling, open_store(job.store, job.endpoint_url)
    files = PoolFiles(job.source, lab, job.endpoint_url)
    pushed = push_to_studio(store, studio_api(lab), production, lab, files, batch)
    get_run_logger().info("pushed %d tasks to %s, project %s", len(pushed["tasks"]), pushed["url"], pushed["project"])
    return dataclasses.replace(batch, label_studio=pushed)


@task(name="pull-annotations", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=_network)
def pull_annotations(pull: Pull, lab: LabelingConfig) -> ImportedLabels:
    """The batches' annotated images written into the training data (class folders, or images/ + masks/)."""
    tasks = pulled_tasks(pull, None if pull.export else studio_api(lab))
    imported = import_pulled(pull, tasks, lab)
    get_run_logger().info(
        "%d tasks: %s added, %d already there, %d skipped, %d unannotated, %d unresolved, %d conflicts",
        imported.tasks, imported.added, imported.already, imported.skipped, imported.unannotated,
        len(imported.disagreements), len(imported.conflicts),
    )  # fmt: skip
    return imported


@task(name="import-artifact", cache_policy=NO_CACHE)
def publish_import_artifact(model: str, imported: ImportedLabels) -> None:
    """`<model>-labels-in`: counts per label, conflicts, skipped, unannotated and unresolved tasks."""
    create_markdown_artifact(
        key=f"{model}-labels-in",
        markdown=imported.markdown(f"{model}: labels imported"),
        description=f"{model}: annotations imported from Label Studio",
    )
