"""A labeling batch: score a pool with the production model, pick K (ml.labeling.selection), hand them to Label Studio.

    settings = resolve_settings(production.config, {"labeling.strategy": "balanced"}, LABELING)
    batch = select_batch(store, production, BatchRequest("incoming/", settings.labeling, settings.monitor, "b1"))
    # a large pool in shards (flows.select_for_labeling): shortlist_of per shard, merge_shortlists, finish_batch
    labels_from_batches(store, "demo", prepared)     # {batch: images of this dataset it supplied}

Layout in the store:
    labeling/<model>/<batch>/tasks.json         Label Studio import (ml.labeling.labelstudio), the model's guess
                                                attached
    labeling/<model>/<batch>/label_config.xml   the labeling config whose names and labels the tasks use
    labeling/<model>/<batch>/selection.csv      rank, path, sha256, uncertainty, measure, predicted, confidence,
                                                strategy
selection.csv is written last: a batch exists once it does, so a crash never leaves a half-written batch that
later selections would treat as queued. Images queued in an earlier batch, or present under the version's
data.root (same sha256), are skipped. The pool streams (ml.labeling.scored_pool) and only the shortlist is kept; the
chosen images are read once more for the model's guess (a segmenter predicts their masks again) and a thumbnail.

Closing the loop: labelled images dropped into the training data (class folders, or images/ + masks/) are read by
the next retrain like any other file, so the dataset fingerprint changes; the retrain records in the version's
metadata how many of its images each batch supplied (labels_from_batches, matched by sha256: renaming is fine).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.config.production import LabelingConfig, MonitorConfig
from ml.core.files import sha256_file
from ml.core.tiling import onnx_predictor
from ml.data.masks import MASKS
from ml.data.prepare import PreparedData, sample_digests
from ml.export.onnx import open_session
from ml.labeling.labelstudio import brush_result, choices_result, label_config, labelstudio_task
from ml.labeling.scored_pool import PoolFiles, scored_items, thumbnail
from ml.labeling.selection import Shortlist
from ml.monitoring.production import Production
from ml.monitoring.rows import Segmenter, decode
from ml.monitoring.scoring import ImageItem, image_source, local_images
from ml.registry.store import ArtifactStore

SELECTION_FILE, TASKS_FILE, CONFIG_FILE = "selection.csv", "tasks.json", "label_config.xml"


def batch_prefix(model: str, batch: str) -> str:
    return f"labeling/{model}/{batch}/"


def earlier_selections(store: ArtifactStore, model: str) -> pd.DataFrame:
    """sha256 and batch of every image queued so far (complete batches: those with a selection.csv)."""
    keys = [k for k in store.list(f"labeling/{model}/") if k.count("/") == 3 and k.endswith("/" + SELECTION_FILE)]
    frames = [
        pd.read_csv(io.BytesIO(store.get_bytes(k)), usecols=["sha256"], dtype=str).assign(batch=k.split("/")[2])
        for k in keys
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["sha256", "batch"])


def training_digests(root: Path, workers: int = 4) -> set[str] | None:
    """sha256 of every image file under the training data root (masks/ holds masks, not images); None when the
    root is not on this machine or holds no image files (rows of .npy arrays, as quickdraw's, are not files a
    pool image could be a copy of)."""
    if not root.is_dir():
        return None
    images = (item for item in local_images(root) if Path(item.file).relative_to(root).parts[0] != MASKS)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return set(pool.map(lambda item: sha256_file(item.file), images)) or None


def labels_from_batches(store: ArtifactStore, model: str, prepared: PreparedData) -> dict[str, int]:
    """How many of the dataset's images each labeling batch supplied: {batch: count}, {} when none did."""
    queued = earlier_selections(store, model)
    if queued.empty:
        return {}
    images = sample_digests(prepared).query("row < 0")["sha256"]  # image files; npy rows are not
    found = queued[queued["sha256"].isin(set(images))].drop_duplicates("sha256")
    return {str(b): int(n) for b, n in found["batch"].value_counts().sort_index().items()}


@dataclass
class LabelingBatch:
    model: str
    version: str
    batch: str
    pool: str
    strategy: str
    measure: str
    scored: int  # pool images seen
    unreadable: int
    known: int  # skipped: queued in an earlier batch, or in the training data
    selected: int
    training_images: int | None  # images hashed under the version's data.root; None: not here, or no image files
    seconds: float = 0.0
    recipe: str = ""  # a folder pool: the Label Studio start command and local storage its tasks need
    label_studio: dict[str, Any] = field(default_factory=dict)  # pushed: url, project id, task ids (push_batch)
    links: dict[str, str] = field(default_factory=dict)  # tasks, label_config, selection -> URL in the store
    shown: list[dict[str, Any]] = field(default_factory=list)  # selection rows + base64 thumbnail, for the artifact

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "shown"}

    def markdown(self) -> str:
        """The batch for the Prefect UI: counts, links, and a thumbnail table of the first picks."""
        head = (
            f"**{self.model}** {self.version}, batch `{self.batch}`: {self.selected} of {self.scored} pool images "
            f"selected ({self.strategy}, {self.measure}); {self.known} skipped as queued or in the training data, "
            f"{self.unreadable} unreadable.\n\n"
        )
        if not self.selected:
            return head + "Nothing new to label.\n"
        links = (
            f"Import [tasks.json]({self.links['tasks']}) into a Label Studio project set up with "
            f"[label_config.xml]({self.links['label_config']}); "
            f"the picks: [selection.csv]({self.links['selection']}).\n\n"
        )
        if self.recipe:
            links += "Start Label Studio so that the images display:\n\n```\n" + self.recipe + "\n```\n\n"
        if self.label_studio:
            ls = self.label_studio
            where = f"[project {ls['project']}]({ls['url']}/projects/{ls['project']})"
            links += f"Pushed to Label Studio {where}: {len(ls['tasks'])} tasks.\n\n"
        rows = [
            f"| {r['rank']} | ![{r['rank']}](data:image/png;base64,{r['thumbnail']}) | {r['predicted']} | "
            f"{r['confidence']:.3f} | {r['uncertainty']:.3f} | {str(r['path']).replace('|', '%7C')} |"
            for r in self.shown
        ]
        table = "| rank | image | predicted | confidence | uncertainty | file |\n|---:|---|---|---:|---:|---|\n"
        rest = self.selected - len(rows)
        more = f"\n... and {rest} more in selection.csv\n" if rest > 0 else ""
        return head + links + table + "\n".join(rows) + "\n" + more


@dataclass(frozen=True)
class BatchRequest:
    """One labeling batch asked for: the pool, the settings it is chosen with, and the batch's name."""

    pool: str  # a folder or s3://bucket/prefix
    lab: LabelingConfig
    mon: MonitorConfig  # scoring: batch_size, workers
    batch: str
    endpoint_url: str | None = None  # for an s3:// pool


def select_batch(store: ArtifactStore, production: Production, req: BatchRequest) -> LabelingBatch:
    """Score the pool, skip known images, pick labeling.budget of them, write the batch (nothing if none)."""
    start = time.perf_counter()
    PoolFiles(req.pool, req.lab, req.endpoint_url)  # a folder Label Studio could not serve fails before scoring
    known = known_images(store, production, req.mon)
    images = image_source(req.pool, production.classes, req.endpoint_url)
    shortlist = shortlist_of(production, images, req.lab, req.mon, known.skip)
    return finish_batch(store, production, req, shortlist, known, start)


@dataclass(frozen=True)
class KnownImages:
    """What a batch must not offer again: images queued in earlier batches or in the version's training data."""

    skip: frozenset[str]  # their sha256
    training: int | None  # images hashed under the version's data.root; None: not on this machine


def known_images(store: ArtifactStore, production: Production, mon: MonitorConfig) -> KnownImages:
    root = production.config.get("data", {}).get("root")
    training = training_digests(Path(root), mon.workers) if root else None
    skip = set(earlier_selections(store, production.model)["sha256"]) | (training or set())
    return KnownImages(frozenset(skip), None if training is None else len(training))


def shortlist_of(
    production: Production,
    items: Iterable[ImageItem],
    lab: LabelingConfig,
    mon: MonitorConfig,
    skip: Iterable[str],
    seed_offset: int = 0,
) -> Shortlist:
    """The images a batch may pick from, streamed through the model; only the shortlist is kept. Shards of one pool
    (seed_offset = shard) give shortlists that Shortlist.absorb merges into the pool's."""
    shortlist = Shortlist(lab.strategy, lab.measure, lab.budget, lab.candidates, lab.seed + seed_offset, skip)
    for frame in scored_items(production, items, lab, mon):
        shortlist.add(frame)
    shortlist.skip = frozenset()  # all streamed: a shard's shortlist travels back without the (large) skip set
    return shortlist


def merge_shortlists(shortlists: Iterable[Shortlist], lab: LabelingConfig) -> Shortlist:
    """The shortlist of a whole pool from those of its shards (none: an empty pool)."""
    merged = Shortlist(lab.strategy, lab.measure, lab.budget, lab.candidates, lab.seed)
    for part in shortlists:
        merged.absorb(part)
    return merged


def finish_batch(
    store: ArtifactStore,
    production: Production,
    req: BatchRequest,
    shortlist: Shortlist,
    known: KnownImages,
    start: float,
) -> LabelingBatch:
    """Pick from the shortlist and write the batch (nothing if it is empty); `start`: when the selection began."""
    chosen, lab = shortlist.select(), req.lab
    record = LabelingBatch(
        production.model,
        production.version,
        req.batch,
        req.pool,
        lab.strategy,
        lab.measure,
        shortlist.scored,
        shortlist.unreadable,
        shortlist.known,
        len(chosen),
        known.training,
    )
    if len(chosen):
        files = PoolFiles(req.pool, lab, req.endpoint_url)
        record.links, record.shown = write_batch(store, production, chosen, files, lab, req.mon.workers, req.batch)
        record.recipe = files.recipe()
    record.seconds = time.perf_counter() - start
    return record


def write_batch(
    store: ArtifactStore,
    production: Production,
    chosen: pd.DataFrame,
    files: PoolFiles,
    lab: LabelingConfig,
    workers: int,
    batch: str,
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """tasks.json and label_config.xml, then selection.csv (the commit point); their URLs and the shown rows."""
    prefix = batch_prefix(production.model, batch)
    made = _tasks(production, chosen, files, lab, workers, batch)
    control = lab.brush_name if production.kind == "segment" else lab.choices_name
    store.put_bytes(prefix + TASKS_FILE, json.dumps([task for task, _ in made], indent=1).encode())
    store.put_bytes(
        prefix + CONFIG_FILE, label_config(production.kind, production.classes, lab.image_name, control).encode()
    )
    selection = pd.DataFrame(
        {
            "rank": chosen["rank"],
            "path": chosen["file"],
            "sha256": chosen["sha256"],
            "uncertainty": chosen["score"],
            "measure": lab.measure,
            "predicted": chosen["pred"],
            "confidence": chosen["confidence"],
            "strategy": chosen["strategy"],
        }
    )
    store.put_bytes(prefix + SELECTION_FILE, selection.to_csv(index=False).encode())
    links = {name: store.url(prefix + key) for name, key in
             (("tasks", TASKS_FILE), ("label_config", CONFIG_FILE), ("selection", SELECTION_FILE))}  # fmt: skip
    shown = selection.head(lab.thumbnails).to_dict("records")
    return links, [row | {"thumbnail": thumb} for row, (_, thumb) in zip(shown, made, strict=False)]


def _tasks(
    production: Production, chosen: pd.DataFrame, files: PoolFiles, lab: LabelingConfig, workers: int, batch: str
) -> list[tuple[dict[str, Any], str]]:
    """Each chosen image's Label Studio task, the model's guess attached, and its thumbnail (base64 PNG)."""
    seg = Segmenter.of(production) if production.kind == "segment" else None
    predict = onnx_predictor(open_session(Path(production.onnx))) if seg else None

    def one(row: Any) -> tuple[dict[str, Any], str]:
        img = decode(files.read(row.file), production.channels)
        region = row.sha256[:10]
        if seg is None:
            results = [choices_result(row.pred, lab.choices_name, lab.image_name, region)]
        else:  # an empty predicted mask is no region: the annotator starts from a blank page
            mask = np.asarray(seg.foreground(img, predict) > seg.threshold)
            results = [brush_result(mask, row.pred, lab.brush_name, lab.image_name, region)] if mask.any() else []
        data = {"path": row.file, "sha256": row.sha256, "batch": batch}
        task = labelstudio_task(files.url(row.file), results, production.version, row.confidence, **data)
        return task, thumbnail(img)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, chosen.itertuples(index=False)))
