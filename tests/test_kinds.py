"""Each task kind runs the stages through their kind registries; a kind a stage lacks fails naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml.config.run import load_config
from ml.core.kinds import KINDS, KindRegistry, UnknownKind
from ml.data.prepare import prepare_dataset
from ml.evaluation.step import EVALUATORS, evaluate_step
from ml.export.step import EXPORTERS, export_step, latency_step, onnx_metrics_step
from ml.labeling.scored_pool import POOL_SCORERS
from ml.monitoring.reference import REFERENCES
from ml.monitoring.rows import ROWS
from ml.training.step import TRAINERS, train_step
from tests.conftest import tiny_overrides, tiny_seg_overrides

REGISTRIES = [TRAINERS, EVALUATORS, EXPORTERS, REFERENCES, ROWS, POOL_SCORERS]


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.stage)
def test_every_stage_has_every_kind_and_refuses_others(registry: KindRegistry) -> None:
    assert set(registry.kinds) == set(KINDS)
    with pytest.raises(UnknownKind, match=rf"no {registry.stage} implementation for model.task='detect'"):
        registry("detect")


def test_a_registry_refuses_an_implementation_for_no_kind() -> None:
    with pytest.raises(UnknownKind, match="'detect'"):
        KindRegistry("training", classify=print, detect=print)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "overrides", "metric"),
    [("demo", tiny_overrides, "macro_f1"), ("demo-seg", tiny_seg_overrides, "f1")],
    ids=["classify", "segment"],
)
def test_a_kind_trains_evaluates_and_exports_through_the_registries(tmp_path: Path, preset, overrides, metric) -> None:
    cfg = load_config(preset, overrides(tmp_path))
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    run_dir = tmp_path / "run"
    trained = train_step(cfg, prepared, run_dir)
    assert Path(trained.best_checkpoint).is_file() and trained.epochs_run == cfg.train.epochs
    evaluation = evaluate_step(cfg, prepared, trained, run_dir)
    assert 0.0 <= evaluation.metrics[metric] <= 1.0
    exported = export_step(cfg, prepared, trained, run_dir)
    onnx = Path(exported.path)
    assert onnx.is_file()
    shipped = onnx_metrics_step(cfg, prepared, onnx)
    assert shipped[metric] == pytest.approx(evaluation.metrics[metric], abs=0.02)  # the file scores as torch did
    assert latency_step(cfg, prepared, onnx) > 0
