"""A registered version scored on a folder it never saw, in the layout of the preset it was trained with.

    result = evaluate_version(registry, "doodle", None, Path("/data/new-doodles"), Path("/tmp/holdout"))

Every image of the folder is scored (no split) with the version's own ONNX file (sha256 checked), decoding,
size and decision threshold, through onnxruntime: the numbers a consumer of that version would see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml.config.data import GroupConfig
from ml.config.run import RunConfig
from ml.core.metrics import classification_metrics, decision_threshold
from ml.core.thresholds import decide
from ml.data.errors import DatasetError
from ml.data.prepare import PreparedData, check_basic, load_frame, write_prepared
from ml.evaluation.classifier import by_source
from ml.export.onnx_eval import class_probs
from ml.export.segmenter import evaluate_onnx_segmenter
from ml.registry.champion import fetch_version_for
from ml.registry.versions import PRODUCTION, Registry, RegistryError
from ml.training.classifier import load_split


def version_config(meta: dict[str, Any], data_root: Path) -> RunConfig:
    """The version's resolved config, reading `data_root` instead of its training data (never generated)."""
    raw = {**meta["config"], "data": {**meta["config"]["data"], "root": str(data_root), "synthetic": None}}
    return RunConfig.model_validate(raw)


def prepare_holdout(cfg: RunConfig, classes: list[str], out_dir: Path) -> PreparedData:
    """Index the folder, every image on the `val` side; a label the version does not predict is refused. The
    folder need not hold every class, nor the grouping column of the training data: it is never split."""
    frame, _ = load_frame(cfg.data.model_copy(update={"classes": None, "group": GroupConfig()}))
    unknown = sorted(set(frame["label"]) - set(classes))
    if unknown:
        raise DatasetError(f"{cfg.data.root}: classes {unknown} are not among the version's classes {classes}")
    present = [c for c in classes if (frame["label"] == c).any()]
    check_basic(frame, cfg.data, present)
    return write_prepared(frame.assign(split="val"), cfg.data, classes, out_dir, generated=False)


def evaluate_version(
    registry: Registry, model: str, version: str | None, data_root: Path, workdir: Path, rows: bool = False
) -> dict[str, Any]:
    """Metrics of `model`@`version` (default: production) on every image under `data_root`; with `rows`, a
    classifier's per-image {target, pred} too (in a fixed order), for a paired comparison of two versions."""
    if version is None:
        alias = registry.get_alias(model, PRODUCTION)
        if alias is None:
            raise RegistryError(f"model {model!r} has no {PRODUCTION} version in {registry.store.url()}")
        version = alias["version"]
    if not data_root.exists():
        raise DatasetError(f"{data_root}: no such folder")
    meta = registry.metadata(model, version)
    cfg = version_config(meta, data_root)
    prepared = prepare_holdout(cfg, meta["classes"], workdir / "data")
    onnx = fetch_version_for(registry, model, version, prepared, workdir)
    if cfg.model.task == "segment":
        metrics = evaluate_onnx_segmenter(cfg, prepared, onnx)
    else:
        images, targets = load_split(cfg, prepared, "val")
        probs = class_probs(onnx, images, prepared.classes)
        threshold = decision_threshold(meta)
        metrics = classification_metrics(targets, probs, prepared.classes, threshold)
        preds = decide(probs, threshold)
        sources = by_source(prepared, "val", targets, preds)
        if sources is not None:
            metrics["by_source"] = sources
    result = {"model": model, "version": version, "data": str(data_root), "task": cfg.model.task, "metrics": metrics}
    if rows and cfg.model.task != "segment":
        result["rows"] = [{"target": int(t), "pred": int(p)} for t, p in zip(targets, preds, strict=True)]
    return result
