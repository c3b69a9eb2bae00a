"""Where a study lives and how a later call continues it.

tune.storage unset: an Optuna journal at <storage.uri>/tune/<study>.journal. On a file:// store that is the file
itself, so workers sharing the folder append to it at once (the journal locks each write). On s3:// it is
downloaded to <workdir>/<model>/tune/ at the start and uploaded after each trial: one worker at a time per study;
for several, set tune.storage to an RDB URL (postgresql://...) that every worker opens.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

from ml.config.run import RunConfig
from ml.registry.file_store import FileStore
from ml.registry.storage import open_store
from ml.registry.store import ArtifactStore


def study_name(cfg: RunConfig) -> str:
    return cfg.tune.study or cfg.name


def _journal(cfg: RunConfig) -> tuple[ArtifactStore, str, Path]:
    """The store, the journal's key in it, and the file Optuna writes (the store's own file on file://)."""
    store = open_store(cfg.storage.uri, cfg.storage.endpoint_url, cfg.storage)
    key = f"tune/{study_name(cfg)}.journal"
    root = store.root if isinstance(store, FileStore) else cfg.storage.workdir / cfg.name
    return store, key, root / key


def study_location(cfg: RunConfig) -> str:
    if cfg.tune.storage:
        return cfg.tune.storage
    store, key, _ = _journal(cfg)
    return store.url(key)


def open_study(cfg: RunConfig, first: dict | None = None) -> optuna.Study:
    """The study of cfg.tune, continued if it exists; a new one gets `first` queued as its first trial. TPE is
    seeded with tune.seed plus the trials already done, so a continued study does not redraw its first points."""
    storage: str | JournalStorage
    if cfg.tune.storage:
        storage = cfg.tune.storage
    else:
        store, key, path = _journal(cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not isinstance(store, FileStore) and store.exists(key):
            store.get_file(key, path)
        storage = JournalStorage(JournalFileBackend(str(path)))
    name = study_name(cfg)
    done = next((s.n_trials for s in optuna.get_all_study_summaries(storage) if s.study_name == name), 0)
    p = cfg.tune.pruner
    pruner = optuna.pruners.MedianPruner(p.startup_trials, p.min_epochs) if p.kind == "median" else None
    study = optuna.create_study(
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=cfg.tune.seed + done, n_startup_trials=cfg.tune.startup_trials),
        pruner=pruner or optuna.pruners.NopPruner(),
        study_name=name,
        direction="minimize" if cfg.train.monitor == "loss" else "maximize",
        load_if_exists=True,
    )
    if done == 0 and first:
        study.enqueue_trial(first, skip_if_exists=True)
    return study


def save_study(cfg: RunConfig) -> None:
    """Upload the journal to an s3:// store; a file store's journal and an RDB are written in place."""
    store, key, path = _journal(cfg)
    if not cfg.tune.storage and not isinstance(store, FileStore):
        store.put_file(key, path)
