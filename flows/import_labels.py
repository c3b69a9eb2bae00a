r"""Pull finished Label Studio annotations into the training data, where the next retrain reads them.

    python -m flows.import_labels --model demo                          # every batch pushed to the server
    python -m flows.import_labels --model demo --batch 20261201T040000Z-1a2b3c4d
    python -m flows.import_labels --model demo --export project-1-at-2026-12-01.json   # a JSON export instead
    python -m flows.import_labels --model demo --data-root data/demo --set labeling.label_studio.resolve=refuse

From the server (labeling.label_studio.url of the production version, or --set; API key: $LABEL_STUDIO_API_KEY,
else the Prefect Secret block labeling.label_studio.secret_block): the tasks of each batch flows.select_for_labeling
pushed (label_studio.json in the store), all of them unless --batch names some (none pushed: nothing to do). From
--export: a Label Studio JSON export (the tasks of --batch, or all). Annotated images are copied into the training
data (--data-root, default: the version's data.root) as a classifier's class folders, or a segmenter's images/ +
masks/ (brush RLE decoded); skipped and unannotated tasks are counted, several annotators' labels resolved
(labeling.label_studio.resolve: majority, or refuse) or listed, and an image already in the data under another
label is a conflict (never written). Importing again adds nothing twice. The Prefect artifact `<model>-labels-in`
shows the counts per label, the conflicts, skipped and unannotated tasks. The last stdout line is a JSON summary;
exit code 0 when the import ran, 1 when it failed, 2 for bad arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from flows.cli.args import existing, print_summary, result_or_report
from flows.cli.params import EndpointUrl, ModelName, Overrides, Store
from flows.cli.production import overrides_or_exit, parser
from flows.cli.runs import alerting_flow
from ml.config.publishing import DEFAULT_STORE
from ml.labeling.annotations import ImportedLabels
from ml.labeling.round_trip import Pull, pushed_batches
from ml.monitoring.production import LABELING, PRODUCTION_CACHE
from ml.registry.storage import open_store
from tasks.labeling import publish_import_artifact, pull_annotations
from tasks.monitoring import fetch_production, settings_for


@alerting_flow("import-labels", named_by="model")
def import_labels(
    model: ModelName,
    store: Store = DEFAULT_STORE,
    batches: list[str] | None = None,
    export: str | None = None,
    data_root: str | None = None,
    overrides: Overrides = None,
    cache_dir: str = str(PRODUCTION_CACHE),
    endpoint_url: EndpointUrl = None,
) -> dict[str, Any]:
    """Copy the annotated images of `model`'s labeling batches into its training data.

    Args:
        model: the model's name in the registry; its `production` version's settings and data.root are used.
        store: artifact store with the registry and the batches: file://DIR or s3://bucket/prefix.
        batches: the batches to import (default: every batch pushed to Label Studio, or all of an export).
        export: a Label Studio JSON export file, read instead of the server.
        data_root: the training data to write into (default: the production version's data.root).
        overrides: the version's settings overridden, e.g. {"labeling.label_studio.resolve": "refuse"}.
        cache_dir: where production versions are downloaded (once per version).
        endpoint_url: S3-compatible server for s3:// URIs (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).
    """
    # 1. the production version: its kind, labeling settings and training data root
    production = fetch_production(model, store, Path(cache_dir), endpoint_url)
    lab = settings_for(production, overrides or {}, LABELING).labeling
    root = data_root or production.config.get("data", {}).get("root")
    if root is None:
        raise ValueError(f"{model} {production.version} has no data.root: pass --data-root")
    # 2. the batches' tasks (server or export) -> class folders or images/ + masks/ under the data root; none
    #    pushed yet (a model without a server): nothing to do, so the weekly deployment stays quiet
    chosen = batches or ([] if export else pushed_batches(open_store(store, endpoint_url), model))
    if export is None and chosen and lab.label_studio.url is None:
        raise ValueError("no labeling.label_studio.url: pass --export FILE, or --set labeling.label_studio.url=URL")
    pull = Pull(model, production.kind, store, chosen, Path(export) if export else None, Path(root), endpoint_url)
    imported = pull_annotations(pull, lab) if export or chosen else ImportedLabels()
    # 3. Prefect artifact: counts per label, conflicts, skipped, unannotated
    publish_import_artifact(model, imported)
    return {"model": model, "version": production.version, "batches": chosen, "data_root": root, **imported.to_dict()}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, "labeling.*")
    p.add_argument("--batch", dest="batches", action="append", help="a batch to import, repeatable (default: all)")
    p.add_argument(
        "--export", type=existing("file", s3=False), help="a Label Studio JSON export, instead of the server"
    )
    p.add_argument("--data-root", help="the training data to write into (default: the version's data.root)")
    args = p.parse_args(argv)
    overrides = overrides_or_exit(args.overrides, LABELING)
    state = import_labels(
        args.model,
        args.store,
        args.batches,
        args.export,
        args.data_root,
        overrides,
        args.cache_dir,
        args.endpoint_url,
        return_state=True,
    )
    summary = result_or_report(state, "import", {"model": args.model})
    if summary is None:
        return 1
    added = ", ".join(f"{label} {n}" for label, n in sorted(summary["added"].items())) or "none"
    print(
        f"imported: {summary['tasks']} tasks of {len(summary['batches']) or 'the export'} batches into "
        f"{summary['data_root']}: added {added}; {summary['already']} already there, {summary['skipped']} skipped, "
        f"{summary['unannotated']} unannotated, {len(summary['disagreements'])} unresolved, "
        f"{len(summary['conflicts'])} conflicts"
    )
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
