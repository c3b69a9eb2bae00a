"""Champion vs challenger: the production model and the candidate scored on THIS run's validation split.

    production = registry.get_alias(cfg.name, "production")     # read once, before comparing
    champion = challenge(registry, cfg, prepared, Path("model.onnx"), production and production["version"], tmp)

Both ONNX files go through ml.export.step.onnx_metrics_step (classifier or segmenter), so neither side profits
from a different split, preprocessing or metric code. A production model that cannot score this split (other
classes, other input size, a corrupt file) is reported in `ChampionEval.error`, and the champion rule fails
with that reason.
"""

from __future__ import annotations

from pathlib import Path

from ml.config.evaluation import CLASSIFIER_METRICS, SEGMENTER_METRICS
from ml.config.run import RunConfig
from ml.core.files import sha256_file
from ml.data.prepare import PreparedData
from ml.evaluation.gate import ChampionEval
from ml.export.onnx import IncompatibleModel
from ml.export.step import onnx_metrics_step
from ml.registry.versions import MODEL_FILE, Registry


def headline(cfg: RunConfig, metrics: dict) -> dict[str, float | None]:
    """The task's scalar metrics (what the champion rule and regression alerts compare)."""
    names = SEGMENTER_METRICS if cfg.model.task == "segment" else CLASSIFIER_METRICS
    return {name: metrics[name] for name in names if name in metrics}


def fetch_version_for(registry: Registry, model: str, version: str, prepared: PreparedData, dest_dir: Path) -> Path:
    """Download a version's model.onnx (sha256 checked) to score `prepared`, after checking it predicts its classes."""
    meta = registry.metadata(model, version)
    if meta.get("classes") != prepared.classes:
        raise IncompatibleModel(f"it predicts classes {meta.get('classes')}, this split has {prepared.classes}")
    path = registry.fetch(model, version, MODEL_FILE, dest_dir / f"{model}-{version}.onnx")
    if sha256_file(path) != meta["onnx_sha256"]:
        raise IncompatibleModel(f"{registry.version_uri(model, version)}/{MODEL_FILE} does not match its sha256")
    return path


def challenge(
    registry: Registry,
    cfg: RunConfig,
    prepared: PreparedData,
    candidate_onnx: Path,
    production: str | None,
    workdir: Path,
) -> ChampionEval:
    """Score the candidate and (if any) the `production` version on the validation split with the same code."""
    candidate = onnx_metrics_step(cfg, prepared, candidate_onnx)
    result = ChampionEval(production, headline(cfg, candidate), n_images=candidate["n"])
    if production is None:
        return result
    try:
        path = fetch_version_for(registry, cfg.name, production, prepared, workdir)
        result.production_metrics = headline(cfg, onnx_metrics_step(cfg, prepared, path))
    except IncompatibleModel as e:
        result.error = str(e)
    return result
