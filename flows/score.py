r"""Score new images with the production model into the prediction log (monitoring/<model>/predictions/).

    python -m flows.score --model demo --source incoming/
    python -m flows.score --model demo --source s3://bucket/incoming/2026-11-23 --store s3://models/visionflow
    python -m flows.score --model demo --source incoming/ --set monitor.batch_size=512 --set monitor.workers=8
    python -m flows.score --model demo --source s3://bucket/huge --set monitor.shard_files=50000 \
        --set monitor.dask_address=tcp://scheduler:8786      # shards as tasks on a Dask cluster

The source (a folder, recursively, or an S3 prefix, page by page) is streamed: memory stays flat whatever the
number of images. A file that does not decode is logged with readable=false and its error, and skipped. Files in
a folder named after one of the model's classes are logged with that label (ground truth for the monitor).
Settings are the production version's `monitor` section; --set monitor.KEY=VALUE overrides them. The last stdout
line is a JSON summary; exit code 0 when scored, 1 when scoring failed, 2 for bad arguments.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow

from flows.cli.args import existing, print_summary, result_or_report
from flows.cli.params import EndpointUrl, ModelName, Overrides, Source, Store
from flows.cli.production import overrides_or_exit, parser
from flows.cli.runs import alerting_flow, shard_runner
from ml.config.publishing import DEFAULT_STORE
from ml.monitoring.log import LogWritten, ScoringJob
from ml.monitoring.production import PRODUCTION_CACHE, SCORING
from ml.monitoring.scoring import source_shards
from tasks.monitoring import fetch_production, run_name, score_shard, score_source, settings_for


@alerting_flow("score", named_by="model")
def score(
    model: ModelName,
    source: Source,
    store: Store = DEFAULT_STORE,
    overrides: Overrides = None,
    cache_dir: str = str(PRODUCTION_CACHE),
    endpoint_url: EndpointUrl = None,
) -> dict[str, Any]:
    """Score every image under `source` with `model`@production into the prediction log.

    Args:
        model: the model's name in the registry; its `production` version scores.
        source: images: a folder (recursively) or s3://bucket/prefix.
        store: artifact store with the registry: file://DIR or s3://bucket/prefix.
        endpoint_url: S3-compatible server for s3:// URIs (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).
        overrides: the version's settings overridden, e.g. {"monitor.batch_size": 512}.
        cache_dir: where production versions are downloaded (once per version).
    """
    run = run_name()
    # 1. the production version: model.onnx (sha256-checked) and its embedding projection, cached per version
    production = fetch_production(model, store, Path(cache_dir), endpoint_url)
    # 2. its monitor settings with this run's overrides, resolved once for every task and shard
    settings = settings_for(production, overrides or {}, SCORING)
    # 3. stream the source through onnxruntime into the prediction log: in one task, or in shards (monitor.shard_files)
    #    on the task runner monitor.dask_address names
    job = ScoringJob(model, production.version, source, store, settings, run, cache_dir, endpoint_url)
    mon = settings.monitor
    if mon.shard_files is None:
        written = score_source(production, job)
    else:
        shards = score_shards.with_options(task_runner=shard_runner(mon.dask_address))
        written = shards(job, production.classes, mon.shard_files)
    return {
        "model": model,
        "version": production.version,
        "run": run,
        "source": source,
        **written.to_dict(),
        "images_per_s": written.rows / written.seconds if written.seconds else None,
    }


@flow(name="score-shards", log_prints=True)
def score_shards(job: ScoringJob, classes: list[str], shard_files: int) -> LogWritten:
    """The source in shards of `shard_files` images, one score-shard task each, submitted as the listing goes, on
    this subflow's task runner; their parquet parts and counts come back as one log.

    Args:
        job: the scoring run every shard shares (model version, source, store, settings, run name).
        classes: the model's classes (a file in a folder named after one is logged with that label).
        shard_files: images per shard (monitor.shard_files).
    """
    start = time.perf_counter()
    shards = source_shards(job.source, classes, shard_files, job.endpoint_url)
    futures = [score_shard.submit(job, refs, i) for i, refs in enumerate(shards)]
    parts = [f.result() for f in futures]
    return LogWritten.merged(parts, time.perf_counter() - start)  # the wall time once every shard is done


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument(
        "--source", required=True, type=existing("folder"), help="folder, file://PATH or s3://BUCKET/PREFIX of images"
    )
    args = p.parse_args(argv)
    overrides = overrides_or_exit(args.overrides)
    state = score(args.model, args.source, args.store, overrides, args.cache_dir, args.endpoint_url, return_state=True)
    summary = result_or_report(state, "scoring", {"model": args.model, "source": args.source})
    if summary is None:
        return 1
    print(
        f"scored:   {summary['rows']} images ({summary['unreadable']} unreadable) in {summary['seconds']:.1f} s "
        f"with {args.model} {summary['version']}"
    )
    print(f"log:      {len(summary['keys'])} parquet part(s) under {args.store}/monitoring/{args.model}/predictions/")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
