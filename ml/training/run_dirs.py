"""Where a retrain trains: `<storage.workdir>/<model>/<split id>-<config hash>/`, keyed by what the weights depend
on (the split, and the model, data and train sections), so a run of the same data and config as one whose
process died continues from its last.pt, whichever process starts it.

    folder = claim_run_dir(cfg, prepared, scratch)   # after validation into `scratch`; moves split.csv + profile in
    mark_published(folder.path, version)             # done: the next run of this key trains from epoch 1

A published run is done: resuming it would skip training and ship the same weights again, so the next claim of its
key moves it aside to `<key>-published-<version>/` and starts fresh. A new key says why it is new, against the
model's latest folder: the data changed (another split id) or which config keys did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ml.config.run import RunConfig
from ml.data.prepare import PreparedData

log = logging.getLogger(__name__)

KEY_FILE, PUBLISHED_FILE = "key.json", "published.json"
# keys of the training sections that change how a run goes, not what it learns: not part of the key
NOT_TRAINING = {"train": {"progress", "resume", "gpus"}, "data": {"expect", "cache_dir"}}


@dataclass(frozen=True)
class RunDir:
    path: Path
    prepared: PreparedData  # split.csv and profile.parquet moved into path
    why: str  # what the training continues, or why it starts fresh


def training_config(cfg: RunConfig) -> dict[str, Any]:
    """The resolved model, data and train sections, less what does not change the weights (NOT_TRAINING)."""
    dumped = cfg.model_dump(mode="json", include={"model", "data", "train"})
    return {
        sec: {k: v for k, v in values.items() if k not in NOT_TRAINING.get(sec, ())} for sec, values in dumped.items()
    }


def config_hash(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(training_config(cfg), sort_keys=True).encode()).hexdigest()[:12]


def run_key(cfg: RunConfig, prepared: PreparedData) -> str:
    return f"{prepared.split_id}-{config_hash(cfg)}"


def claim_run_dir(cfg: RunConfig, prepared: PreparedData, scratch: Path) -> RunDir:
    """The run folder of this model, split and config; the validated split moves from `scratch` into it."""
    model_dir = cfg.storage.workdir / cfg.name
    path = model_dir / run_key(cfg, prepared)
    published = path / PUBLISHED_FILE
    if published.exists():
        version = json.loads(published.read_text())["version"]
        done = path.with_name(f"{path.name}-published-{version}")
        path.replace(done if not done.exists() else done.with_name(f"{done.name}-{uuid.uuid4().hex[:6]}"))
        why = f"fresh: {path.name} was published as {version} (moved aside)"
    elif (path / "last.pt").exists():
        why = f"resuming {path.name}" if cfg.train.resume else "fresh: train.resume=false"
    elif (path / KEY_FILE).exists():
        why = f"fresh: no epoch of {path.name} had finished"
    else:
        why = f"fresh: {_changed_since_latest(model_dir, cfg, prepared)}"
    log.info("run folder %s: %s", path, why)
    path.mkdir(parents=True, exist_ok=True)
    key = {"split_id": prepared.split_id, "config": training_config(cfg)}
    (path / KEY_FILE).write_text(json.dumps(key, indent=1, sort_keys=True))
    moved = {"split_csv": str(Path(prepared.split_csv).replace(path / "split.csv"))}
    if prepared.profile:
        moved["profile"] = str(Path(prepared.profile).replace(path / Path(prepared.profile).name))
    shutil.rmtree(scratch, ignore_errors=True)
    return RunDir(path, replace(prepared, **moved), why)


def mark_published(run_dir: Path, version: str) -> None:
    (run_dir / PUBLISHED_FILE).write_text(json.dumps({"version": version}))


def _changed_since_latest(model_dir: Path, cfg: RunConfig, prepared: PreparedData) -> str:
    """What differs from the model's most recently claimed folder: the split (data) and which config keys."""
    keys = sorted(model_dir.glob(f"*/{KEY_FILE}"), key=lambda p: p.stat().st_mtime)
    if not keys:
        return "first run of this model here"
    latest = json.loads(keys[-1].read_text())
    changes = []
    if latest["split_id"] != prepared.split_id:
        changes.append(f"data changed (split {latest['split_id']} -> {prepared.split_id})")
    before, now = _flat(latest["config"]), _flat(training_config(cfg))
    if differ := sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k)):
        shown = ", ".join(f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in differ[:5])
        changes.append(f"config changed ({shown}{', ...' if len(differ) > 5 else ''})")
    return f"{' and '.join(changes) or 'no checkpoint of this key'} since {keys[-1].parent.name}"


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out
