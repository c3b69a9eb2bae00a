"""A batch to Label Studio and its annotations back: push (project, storage, import) and pull (tasks by batch).

    pushed = push_to_studio(store, api, production, lab, files, batch)   # {url, project, storage, tasks}
    tasks = batch_tasks(store, api, "demo", "20261201T...")             # the server's tasks of that batch
    tasks = export_tasks(Path("export.json"), batch=None)               # or a Label Studio JSON export
    imported = import_pulled(pull, pulled_tasks(pull, api), lab)        # flows.import_labels: either, written

labeling/<model>/<batch>/label_studio.json (written by push) holds the server's URL, the project id and
{sha256: task id}: what pull asks the server for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from ml.config.production import LabelingConfig
from ml.labeling.annotations import AnnotationRules, ImportedLabels, import_annotations
from ml.labeling.batch import CONFIG_FILE, TASKS_FILE, LabelingBatch, batch_prefix
from ml.labeling.scored_pool import PoolFiles, read_pool_file
from ml.labeling.studio_api import StudioApi
from ml.monitoring.production import Production
from ml.registry.storage import open_store
from ml.registry.store import ArtifactStore

PUSHED_FILE = "label_studio.json"


@dataclass(frozen=True)
class Pull:
    """Where annotations come from and go to: a JSON export file, else the server's tasks of pushed batches."""

    model: str
    kind: str  # classify | segment
    store: str
    batches: list[str]  # none with an export: all its tasks
    export: Path | None
    data_root: Path
    endpoint_url: str | None = None


def push_to_studio(
    store: ArtifactStore,
    api: StudioApi,
    production: Production,
    lab: LabelingConfig,
    files: PoolFiles,
    batch: LabelingBatch,
) -> dict[str, Any]:
    """Import the written batch into the model's project (created with the batch's labeling config when missing)."""
    prefix = batch_prefix(production.model, batch.batch)
    tasks = json.loads(store.get_bytes(prefix + TASKS_FILE))
    project = api.project(lab.label_studio.project or production.model, store.get_bytes(prefix + CONFIG_FILE).decode())
    storage = api.local_storage(project, files.storage) if files.storage is not None else None
    ids = api.import_tasks(project, tasks)
    pushed = {"url": api.url, "project": project, "storage": storage, "batch": batch.batch, "tasks": ids}
    store.put_bytes(prefix + PUSHED_FILE, json.dumps(pushed, indent=1).encode())
    return pushed


def pushed_batches(store: ArtifactStore, model: str) -> list[str]:
    """The model's batches pushed to Label Studio, oldest first."""
    keys = store.list(f"labeling/{model}/")
    return sorted(k.split("/")[2] for k in keys if k.count("/") == 3 and k.endswith("/" + PUSHED_FILE))


def batch_tasks(store: ArtifactStore, api: StudioApi, model: str, batch: str) -> list[dict[str, Any]]:
    """The batch's tasks on the server, with their annotations."""
    pushed = json.loads(store.get_bytes(batch_prefix(model, batch) + PUSHED_FILE))
    ids = set(pushed["tasks"].values())
    return [t for t in api.tasks(pushed["project"]) if t["id"] in ids]


def export_tasks(path: Path, batch: str | None = None) -> list[dict[str, Any]]:
    """The tasks of a Label Studio JSON export (all, or those of `batch`: data.batch, as select_batch wrote it)."""
    tasks = json.loads(path.read_text())
    return [t for t in tasks if batch is None or t["data"].get("batch") == batch]


def pulled_tasks(pull: Pull, api: StudioApi | None) -> list[dict[str, Any]]:
    """The tasks to import: the export's (those of pull.batches, or all), else the server's of each batch."""
    if pull.export is not None:
        return [t for b in pull.batches or [None] for t in export_tasks(pull.export, b)]
    if api is None:
        raise ValueError("pulling from the server needs a StudioApi")
    store = open_store(pull.store, pull.endpoint_url)
    return [t for b in pull.batches for t in batch_tasks(store, api, pull.model, b)]


def import_pulled(pull: Pull, tasks: list[dict[str, Any]], lab: LabelingConfig) -> ImportedLabels:
    """The tasks' annotated images into pull.data_root, the pool files read from disk or S3."""
    rules = AnnotationRules(pull.kind, lab.choices_name, lab.brush_name, lab.label_studio.resolve)
    s3 = any(t["data"]["path"].startswith("s3://") for t in tasks)
    client = boto3.client("s3", endpoint_url=pull.endpoint_url) if s3 else None
    return import_annotations(tasks, rules, pull.data_root, lambda file: read_pool_file(file, client))
