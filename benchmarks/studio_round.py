"""One active-learning round's labels through a real Label Studio server (benchmarks/active_learning.py
--label-studio), by the pipeline's own push and pull:

1. the chosen pool rows are written as PNG files into a pool folder below the server's document root;
2. the batch is written (ml.labeling.batch.write_batch: tasks.json with the round model's guess, label_config.xml,
   selection.csv) and pushed as flows.select_for_labeling pushes it (ml.labeling.round_trip.push_to_studio);
3. a simulated annotator submits each image's true label through the REST API (POST /api/tasks/{id}/annotations);
4. the annotations come back as flows.import_labels pulls them (pulled_tasks, import_pulled) into a class-folder
   data root that grows round by round, and the round trains on those files: path = the imported file, label =
   its class folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ml.config.run import RunConfig
from ml.core.files import sha256_bytes, sha256_file
from ml.labeling.batch import LabelingBatch, write_batch
from ml.labeling.labelstudio import choices_result
from ml.labeling.round_trip import Pull, batch_tasks, import_pulled, pulled_tasks, push_to_studio
from ml.labeling.scored_pool import PoolFiles
from ml.labeling.studio_api import StudioApi
from ml.monitoring.production import Production
from ml.monitoring.reference import split_items
from ml.registry.storage import open_store

MODEL = "al-benchmark"  # the Label Studio project's title, and the model name in the round's store


@dataclass(frozen=True)
class Studio:
    """A running server as a spawned seed process needs it (the Popen stays in the parent)."""

    url: str
    token: str
    document_root: Path


def _write_pool(chosen: pd.DataFrame, rest: pd.DataFrame, folder: Path, channels: int) -> pd.DataFrame:
    """The chosen rows as PNG files (pixels as the scorer saw them) in `folder`; chosen with file and sha256 set to
    the written files' and `key` the pool key."""
    folder.mkdir(parents=True)
    rows = rest.set_index("key").loc[chosen["file"]].reset_index()
    paths, digests = [], []
    for rank, item in zip(chosen["rank"], split_items(rows, channels), strict=True):
        png = item.read()
        path = folder / f"{rank:04d}.png"
        path.write_bytes(png)
        paths.append(str(path))
        digests.append(sha256_bytes(png))
    return chosen.assign(key=chosen["file"], file=paths, sha256=digests, label=rows["label"].to_numpy())


def studio_round(
    studio: Studio, cfg: RunConfig, onnx: Path, chosen: pd.DataFrame, rest: pd.DataFrame, name: str, work: Path
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The chosen rows' labels through the server; the training rows of what came back (rest's columns and order,
    path = the imported file, row -1, label = its class folder) and the round trip's counts and seconds."""
    start = time.perf_counter()
    picked = _write_pool(chosen, rest, studio.document_root / name, cfg.data.channels)
    lab = cfg.labeling.model_copy(update={"document_root": studio.document_root, "budget": len(picked)})
    production = Production(
        MODEL, name, str(onnx), None, None, cfg.data.classes, cfg.data.image_size, cfg.data.channels, {},
        cfg.model_dump(mode="json"),
    )  # fmt: skip
    store_uri = f"file://{work / 'store'}"
    store, files = open_store(store_uri), PoolFiles(str(studio.document_root / name), lab)
    write_batch(store, production, picked, files, lab, 2, name)
    batch = LabelingBatch(MODEL, name, name, files.storage, picked["strategy"].iloc[0], lab.measure,
                          len(rest), 0, 0, len(picked), None)  # fmt: skip
    api = StudioApi(studio.url, studio.token)
    pushed = push_to_studio(store, api, production, lab, files, batch)
    truth = dict(zip(picked["sha256"], picked["label"], strict=True))
    for task in batch_tasks(store, api, MODEL, name):  # the annotator: each image's true class, as a choice
        api.annotate(task["id"], [choices_result(truth[task["data"]["sha256"]], lab.choices_name, lab.image_name)])
    pull = Pull(MODEL, "classify", store_uri, [name], None, work / "data")
    imported = import_pulled(pull, pulled_tasks(pull, api), lab)
    back = {sha256_file(f): f for f in pull.data_root.glob("*/*.png")}
    came = {key: back[sha] for key, sha in zip(picked["key"], picked["sha256"], strict=True) if sha in back}
    rows = rest[rest["key"].isin(came)]
    files_back = [came[k] for k in rows["key"]]
    rows = rows.assign(path=[str(f) for f in files_back], row=-1, label=[f.parent.name for f in files_back])
    counts = {
        "project": pushed["project"],
        "pushed": len(pushed["tasks"]),
        "imported": sum(imported.added.values()),
        "already": imported.already,
        "skipped": imported.skipped,
        "unannotated": imported.unannotated,
        "conflicts": len(imported.conflicts),
        "studio_seconds": time.perf_counter() - start,
    }
    return rows, counts
