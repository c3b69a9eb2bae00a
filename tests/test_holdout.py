"""A binary target-vs-rest model end to end: its threshold travels with the version into scoring, and
flows.evaluate scores the version on folders it never saw."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ml.config.data import SyntheticConfig
from ml.data.synthetic import make_shapes_dataset
from ml.monitoring.production import load_production
from ml.registry.storage import open_store
from ml.registry.versions import Registry
from tests.conftest import tiny_overrides


@pytest.fixture(scope="module")
def circle(tmp_path_factory: pytest.TempPathFactory, prefect_harness) -> SimpleNamespace:
    """demo shrunk, relabelled circle vs not_circle, flip TTA inside the ONNX model, threshold chosen F1-optimal
    on validation; published."""
    from flows.retrain import retrain

    tmp = tmp_path_factory.mktemp("holdout")
    over = tiny_overrides(
        tmp, **{"data.binary_target": "circle", "eval.decision": "f1", "eval.tta": ["hflip"], "export.tta": True}
    )
    summary = retrain("demo", over)
    registry = Registry(open_store(over["storage.uri"]))
    version_dir = tmp / "store" / "models" / "demo" / "versions" / summary["version"]
    meta = registry.metadata("demo", summary["version"])
    return SimpleNamespace(tmp=tmp, over=over, registry=registry, meta=meta, dir=version_dir, summary=summary)


@pytest.mark.slow
def test_the_threshold_is_stored_reported_and_used_by_scoring(circle):
    meta = circle.meta
    assert meta["classes"] == ["not_circle", "circle"] and 0 < meta["decision"]["threshold"] < 1
    report = (circle.dir / "report.md").read_text()
    assert f"P(circle) >= {meta['decision']['threshold']:.4f} (f1 on validation" in report
    # the flips inside model.onnx change its probabilities: the threshold, metrics and gate are all the shipped
    # file's (the checkpoint's are kept beside them), so scoring predicts at the threshold the gate judged
    metrics = json.loads((circle.dir / "metrics.json").read_text())
    assert meta["decision"] == metrics["decision"] and meta["gate"]["measured_on"].startswith("model.onnx as shipped")
    assert meta["metrics"]["accuracy"] == meta["gate"]["metrics"]["accuracy"] == metrics["accuracy"]
    assert metrics["checkpoint"]["loss"] != metrics["loss"]
    # each original class of the negatives is scored on its own (hard negatives stand out)
    assert set(metrics["by_source"]) == {"circle", "square", "triangle", "cross"} and "## By source class" in report
    production = load_production(circle.registry, "demo", circle.tmp / "cache")
    assert production.classifier().threshold == meta["decision"]["threshold"]


@pytest.mark.slow
def test_evaluate_scores_a_version_on_a_folder_it_never_saw(circle, capsys):
    from flows.evaluate import main

    fresh = circle.tmp / "fresh"
    make_shapes_dataset(fresh, SyntheticConfig(per_class=10, seed=7))
    store = circle.over["storage.uri"]
    assert main(["--model", "demo", "--data", str(fresh), "--store", store]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["version"] == circle.summary["version"] and result["metrics"]["n"] == 40
    assert 0 <= result["metrics"]["accuracy"] <= 1 and set(result["metrics"]["by_source"]) == {
        "circle",
        "square",
        "triangle",
        "cross",
    }

    some = circle.tmp / "some"  # not every source class: scored all the same
    make_shapes_dataset(some, SyntheticConfig(classes=["circle", "square"], per_class=5, seed=8))
    assert main(["--model", "demo", "--data", str(some), "--store", store]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["metrics"]["n"] == 10 and set(result["metrics"]["by_source"]) == {"circle", "square"}

    (fresh / "square" / "broken.png").write_bytes(b"not a png")  # refused, naming the file and the rule
    assert main(["--model", "demo", "--data", str(fresh), "--store", store]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "every image readable" in err


def test_a_holdout_folder_needs_neither_every_class_nor_the_grouping_manifest(tmp_path):
    from ml.config.run import load_config
    from ml.registry.holdout import prepare_holdout

    # trained grouped by a manifest column (as logos is by brand); the new folder has two of the four classes
    # and no manifest: it is scored whole, so neither matters
    over = tiny_overrides(tmp_path, **{"data.group.by": "column", "data.group.column": "brand"})
    fresh = tmp_path / "fresh"
    make_shapes_dataset(fresh, SyntheticConfig(classes=["circle", "cross"], per_class=3))
    cfg = load_config("demo", over | {"data.root": str(fresh), "data.synthetic": None})
    classes = ["circle", "square", "triangle", "cross"]
    prepared = prepare_holdout(cfg, classes, tmp_path / "prepared")
    assert prepared.classes == classes
    assert prepared.counts["val"] == {"circle": 3, "square": 0, "triangle": 0, "cross": 3}
