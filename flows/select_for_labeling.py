r"""Pick the pool images worth labeling with the production model, as a Label Studio batch in the store.

    python -m flows.select_for_labeling --model demo --pool unlabeled/ --budget 50
    python -m flows.select_for_labeling --model demo --pool s3://bucket/unlabeled --store s3://models/visionflow
    python -m flows.select_for_labeling --model demo --pool unlabeled/ --set labeling.strategy=balanced
    python -m flows.select_for_labeling --model demo --pool s3://bucket/huge --set monitor.shard_files=50000 \
        --set monitor.dask_address=local                      # shards on a local Dask cluster

The pool (a folder, recursively, or an S3 prefix) streams through the model as in flows.score; each image gets an
uncertainty (labeling.measure: entropy, least_confidence, margin; a segmenter's mean pixel entropy or
uncertain_share) and labeling.strategy picks --budget of them (default labeling.budget): uncertainty, diversity
(k-center greedy on the embeddings among the labeling.candidates x budget most uncertain), balanced (round robin
over predicted classes) or random. Images queued in an earlier batch or found under the version's data.root (same
sha256) are skipped. Written to the store: tasks.json (import it into a Label Studio project set up with
label_config.xml, written beside it: the model's guess is each task's prediction; for a folder pool, start Label
Studio with the document root and local storage the command prints), selection.csv. With
labeling.label_studio.url set, the batch is also pushed to that server (project: labeling.label_studio.project, or
the model's name; API key: $LABEL_STUDIO_API_KEY, else the Prefect Secret block labeling.label_studio.secret_block)
and label_studio.json records the project and task ids flows.import_labels pulls by. The Prefect
artifact `<model>-labeling` shows the batch with thumbnails. Settings are the production version's `labeling` and
`monitor` sections (batch_size, workers); --set labeling.KEY=VALUE / monitor.KEY=VALUE override them. The last
stdout line is a JSON summary; exit code 0 when the pool was scored (a batch written, or nothing new to label),
1 when it failed, 2 for bad arguments.

Labelled images go back into the training data (class folders, or images/ + masks/: flows.import_labels writes
them from the server or an export); the next retrain picks them up and records per batch how many it used
(metadata.json: labels_from_batches).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow

from flows.cli.args import existing, print_summary, result_or_report
from flows.cli.params import Budget, EndpointUrl, ModelName, Overrides, Source, Store
from flows.cli.production import overrides_or_exit, parser
from flows.cli.runs import alerting_flow, shard_runner
from ml.config.publishing import DEFAULT_STORE
from ml.labeling.batch import KnownImages, known_images
from ml.labeling.selection import Shortlist
from ml.monitoring.log import ScoringJob
from ml.monitoring.production import LABELING, PRODUCTION_CACHE
from ml.monitoring.scoring import source_shards
from ml.registry.storage import open_store
from tasks.labeling import choose_batch, publish_batch_artifact, push_batch, shortlist_shard, write_shortlisted
from tasks.monitoring import fetch_production, run_name, settings_for


@alerting_flow("select-for-labeling", named_by="model")
def select_for_labeling(
    model: ModelName,
    pool: Source,
    store: Store = DEFAULT_STORE,
    budget: Budget = None,
    overrides: Overrides = None,
    cache_dir: str = str(PRODUCTION_CACHE),
    endpoint_url: EndpointUrl = None,
) -> dict[str, Any]:
    """Select the `budget` images of `pool` most worth labeling, as a Label Studio batch in the store.

    Args:
        model: the model's name in the registry; its `production` version scores the pool.
        pool: unlabeled images: a folder (recursively) or s3://bucket/prefix.
        store: artifact store with the registry: file://DIR or s3://bucket/prefix.
        endpoint_url: S3-compatible server for s3:// URIs (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).
        budget: images to pick (default: the version's labeling.budget).
        overrides: the version's settings overridden, e.g. {"labeling.strategy": "balanced"}.
        cache_dir: where production versions are downloaded (once per version).
    """
    overrides = {**(overrides or {}), **({"labeling.budget": budget} if budget else {})}
    batch = run_name()  # sortable: later batches list after earlier ones
    # 1. the production version: model.onnx (sha256-checked) and its embedding projection, cached per version
    production = fetch_production(model, store, Path(cache_dir), endpoint_url)
    # 2. score the pool, skip queued and training images, pick the batch; tasks.json + selection.csv -> the store;
    #    in one task, or in shards (monitor.shard_files) on the task runner monitor.dask_address names
    settings = settings_for(production, overrides, LABELING)  # resolved once for every task and shard
    job = ScoringJob(model, production.version, pool, store, settings, batch, cache_dir, endpoint_url)
    mon = settings.monitor
    if mon.shard_files is None:
        selected = choose_batch(production, job)
    else:
        start = time.perf_counter()
        shards = shortlist_shards.with_options(task_runner=shard_runner(mon.dask_address))
        known, shortlists = shards(job, production.classes, mon.shard_files)
        selected = write_shortlisted(production, job, shortlists, known, start)
    # 3. labeling.label_studio.url set: the batch into the model's Label Studio project (ids -> label_studio.json)
    if settings.labeling.label_studio.url and selected.selected:
        selected = push_batch(production, job, selected)
    # 4. Prefect artifact: the batch with thumbnails and links
    publish_batch_artifact(selected)
    return {**selected.to_dict(), "images_per_s": selected.scored / selected.seconds if selected.seconds else None}


@flow(name="shortlist-shards", log_prints=True)
def shortlist_shards(job: ScoringJob, classes: list[str], shard_files: int) -> tuple[KnownImages, list[Shortlist]]:
    """The pool in shards of `shard_files` images, one shortlist-shard task each, on this subflow's task runner.

    Args:
        job: the selection every shard shares (model version, pool, store, settings, batch name).
        classes: the model's classes.
        shard_files: images per shard (monitor.shard_files).
    """
    # the images to skip are found here, where the version's training data is (not on a Dask worker)
    production = job.production()
    known = known_images(open_store(job.store, job.endpoint_url), production, job.settings.monitor)
    shards = source_shards(job.source, classes, shard_files, job.endpoint_url)
    futures = [shortlist_shard.submit(job, refs, i, known.skip) for i, refs in enumerate(shards)]
    return known, [f.result() for f in futures]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, "labeling.* or monitor.*")
    p.add_argument(
        "--pool",
        required=True,
        type=existing("folder"),
        help="folder, file://PATH or s3://BUCKET/PREFIX of unlabeled images",
    )
    p.add_argument("--budget", type=int, help="images to select (default: the version's labeling.budget)")
    args = p.parse_args(argv)
    extra = {"labeling.budget": args.budget} if args.budget is not None else {}
    overrides = overrides_or_exit(args.overrides, LABELING, **extra)
    state = select_for_labeling(
        args.model, args.pool, args.store, None, overrides, args.cache_dir, args.endpoint_url, return_state=True
    )
    summary = result_or_report(state, "selection", {"model": args.model, "pool": args.pool})
    if summary is None:
        return 1
    print(
        f"selected: {summary['selected']} of {summary['scored']} pool images ({summary['strategy']}, "
        f"{summary['measure']}); {summary['known']} known, {summary['unreadable']} unreadable"
    )
    if summary["selected"]:
        print(f"tasks:    {summary['links']['tasks']}")
        print(f"config:   {summary['links']['label_config']} (the Label Studio project's labeling config)")
        if summary["label_studio"]:
            ls = summary["label_studio"]
            print(f"pushed:   {len(ls['tasks'])} tasks to {ls['url']}/projects/{ls['project']}")
        if summary["recipe"]:
            print(f"label studio, so that the images display:\n{summary['recipe']}")
    else:
        print("nothing new to label")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
