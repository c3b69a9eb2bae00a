"""A batch to Label Studio and its annotations back: push (project, storage, import) and pull (tasks by batch).

    pushed = push_to_studio(store, api, production, lab, files, batch)   # {url, project, storage, tasks}
    tasks = batch_tasks(store, api, "demo", "20261201T...")             # the server's tasks of that batch
    tasks = export_tasks(Path("export.json"), batch=None)               # or a Label Studio JSON export

labeling/<model>/<batch>/label_studio.json (written by push) holds the server's URL, the project id and
{sha256: task id}: what pull asks the server for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.config.production import LabelingConfig
from ml.labeling.batch import CONFIG_FILE, TASKS_FILE, LabelingBatch, batch_prefix
from ml.labeling.scored_pool import PoolFiles
from ml.labeling.studio_api import StudioApi
from ml.monitoring.production import Production
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
