"""Champion vs challenger: the production model and the candidate scored on the evaluation images neither of
them trained on: the test split when the run has one (nothing was chosen on it), else the validation split.

    production = registry.get_alias(cfg.name, "production")     # read once, before comparing
    champion = challenge(registry, cfg, prepared, Path("model.onnx"), production and production["version"], tmp)
    files["training.txt"] = write_training_list(prepared, run_dir)   # what this version trained on, for later runs

Each version carries training.txt: the sorted content sha256 of its training images, one a line (content, so a
renamed or moved copy is still recognised). This run's evaluation images whose content production or the
candidate trained on are marked `excluded` in a copy of split.csv, and both ONNX files go through
ml.export.step.onnx_metrics_step on what is left, so neither side profits from a different split, preprocessing
or metric code, nor from having seen the images. A version published before training lists existed is compared
on the whole evaluation split, and the row says so. A paired bootstrap over the images used gives the interval
on candidate - production. A production model that cannot score this split (other classes, other input size, a
corrupt file) is reported in `ChampionEval.error`, and the champion rule fails with that reason.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ml.config.evaluation import CLASSIFIER_METRICS, SEGMENTER_METRICS
from ml.config.run import RunConfig
from ml.core.files import sha256_file
from ml.data.prepare import PreparedData, sample_digests
from ml.evaluation.gate import ChampionEval
from ml.evaluation.stats import paired_bootstrap, resampled_metric
from ml.export.onnx import IncompatibleModel
from ml.export.step import onnx_metrics_step
from ml.registry.store import ObjectNotFound
from ml.registry.versions import MODEL_FILE, Registry

TRAINING_FILE = "training.txt"
EXCLUDED = "excluded"  # the split.csv side of evaluation rows left out of the comparison
SPLIT_NAMES = {"val": "validation", "test": "test"}


def headline(cfg: RunConfig, metrics: dict) -> dict[str, float | None]:
    """The task's scalar metrics (what the champion rule and regression alerts compare)."""
    names = SEGMENTER_METRICS if cfg.model.task == "segment" else CLASSIFIER_METRICS
    return {name: metrics[name] for name in names if name in metrics}


def write_training_list(prepared: PreparedData, out_dir: Path) -> Path:
    """out_dir/training.txt: the sorted, distinct content sha256 of the split's training images."""
    digests = sample_digests(prepared)
    path = out_dir / TRAINING_FILE
    path.write_text("".join(f"{d}\n" for d in sorted(set(digests.loc[digests["split"] == "train", "sha256"]))))
    return path


def training_list(registry: Registry, model: str, version: str, dest_dir: Path) -> set[str] | None:
    """The content sha256 a version trained on; None for a version published before training lists."""
    try:
        path = registry.fetch(model, version, TRAINING_FILE, dest_dir / f"{model}-{version}-{TRAINING_FILE}")
    except ObjectNotFound:
        return None
    return set(path.read_text().split())


def fetch_version_for(registry: Registry, model: str, version: str, prepared: PreparedData, dest_dir: Path) -> Path:
    """Download a version's model.onnx (sha256 checked) to score `prepared`, after checking it predicts its classes."""
    meta = registry.metadata(model, version)
    if meta.get("classes") != prepared.classes:
        raise IncompatibleModel(f"it predicts classes {meta.get('classes')}, this split has {prepared.classes}")
    path = registry.fetch(model, version, MODEL_FILE, dest_dir / f"{model}-{version}.onnx")
    if sha256_file(path) != meta["onnx_sha256"]:
        raise IncompatibleModel(f"{registry.version_uri(model, version)}/{MODEL_FILE} does not match its sha256")
    return path


def unseen_split(
    prepared: PreparedData, production: str, trained_on: set[str] | None, out_dir: Path
) -> tuple[PreparedData, int, int, str]:
    """`prepared` with the evaluation rows (prepared.judged_side) either model trained on marked `excluded` (a copy
    of split.csv under out_dir; its own split_id, so caches do not mix), how many rows are left and were excluded,
    and who had trained on them."""
    split = sample_digests(prepared)
    val = split["split"] == prepared.judged_side
    by_candidate = val & split["sha256"].isin(set(split.loc[split["split"] == "train", "sha256"]))
    by_production = val & split["sha256"].isin(trained_on or set())
    out = by_candidate | by_production
    n_prod, n_cand = int(by_production.sum()), int(by_candidate.sum())
    who = f"{n_prod} trained on by production {production}, {n_cand} by the candidate"
    if trained_on is None:  # published before training lists: today's whole-split comparison, flagged
        who = f"production {production} records no {TRAINING_FILE}: could not exclude its training images; "
        who += f"{n_cand} by the candidate"
    kept = int((val & ~out).sum())
    if not out.any():
        return prepared, kept, 0, who
    out_dir.mkdir(parents=True, exist_ok=True)
    split.loc[out, "split"] = EXCLUDED
    split_csv = out_dir / "split.csv"
    split.drop(columns="sha256").to_csv(split_csv, index=False)
    return replace(prepared, split_csv=str(split_csv)), kept, int(out.sum()), who


def _interval(cfg: RunConfig, prepared: PreparedData, candidate: dict, production: dict) -> tuple[float, float] | None:
    """The paired bootstrap interval of candidate - production on the champion metric over the images used."""
    rules, k = cfg.gate.champion, len(prepared.classes)
    stats = [resampled_metric(m.get("per_image", []), rules.metric, k) for m in (candidate, production)]
    if rules.bootstrap == 0 or None in stats:
        return None
    return paired_bootstrap(stats[0], stats[1], len(candidate["per_image"]), rules.bootstrap, rules.confidence)


def challenge(
    registry: Registry,
    cfg: RunConfig,
    prepared: PreparedData,
    candidate_onnx: Path,
    production: str | None,
    workdir: Path,
) -> ChampionEval:
    """Score the candidate and (if any) the `production` version with the same code on the evaluation images
    (prepared.judged_side) neither trained on; with fewer than gate.champion.min_images of those nothing is scored
    (the rule refuses). A binary threshold is each model's own, chosen on validation."""
    side = prepared.judged_side
    if production is None:
        candidate = onnx_metrics_step(cfg, prepared, candidate_onnx, side)
        return ChampionEval(None, headline(cfg, candidate), n_images=candidate["n"], split=SPLIT_NAMES[side])
    try:
        path = fetch_version_for(registry, cfg.name, production, prepared, workdir)
    except IncompatibleModel as e:
        candidate = onnx_metrics_step(cfg, prepared, candidate_onnx, side)
        metrics = headline(cfg, candidate)
        return ChampionEval(production, metrics, n_images=candidate["n"], error=str(e), split=SPLIT_NAMES[side])
    trained_on = training_list(registry, cfg.name, production, workdir)
    unseen, n_left, n_excluded, who = unseen_split(prepared, production, trained_on, workdir / f"champion-{production}")
    result = ChampionEval(production, n_images=n_left, n_excluded=n_excluded, excluded=who, split=SPLIT_NAMES[side])
    if n_left < cfg.gate.champion.min_images:
        return result
    candidate = onnx_metrics_step(cfg, unseen, candidate_onnx, side)
    result.candidate_metrics = headline(cfg, candidate)
    try:
        scored = onnx_metrics_step(cfg, unseen, path, side)
    except IncompatibleModel as e:
        result.error = str(e)
        return result
    result.production_metrics = headline(cfg, scored)
    result.interval = _interval(cfg, unseen, candidate, scored)
    return result
