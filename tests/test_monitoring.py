"""Scoring and drift monitoring on generated shapes, measured: a tiny model is trained once for the module and
published with its reference; fresh draws of the same generator must not alarm, shifted ones must."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from PIL import Image, ImageEnhance, ImageFilter
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, DeploymentFilter, DeploymentFilterId

import ml.monitoring.scoring
from flows.cli.runs import shard_runner
from flows.monitor import monitor
from flows.retrain import retrain
from flows.score import main as score_main
from flows.score import score
from ml.config.production import MonitorConfig
from ml.config.run import load_config
from ml.data.prepare import prepare_dataset
from ml.data.synthetic import make_shapes_dataset
from ml.export.classifier import export_classifier
from ml.export.onnx_eval import evaluate_on_split
from ml.monitoring.drift import attach_labels, detect_drift, live_metrics
from ml.monitoring.log import read_window, write_log
from ml.monitoring.production import SCORING, load_production, resolve_settings
from ml.monitoring.reference import PROJECTION_FILE, REFERENCE_FILE, reference_for_run
from ml.monitoring.scoring import image_source, score_stream
from ml.registry.publish import publish_version, version_metadata
from ml.registry.storage import open_store
from ml.registry.versions import Registry
from ml.training.classifier import train_classifier
from tests.conftest import tiny_overrides
from tests.s3_servers import aws_env, moto_server  # noqa: F401  (fixtures)

DRAWS = 20


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The demo preset shrunk (160 images, half for validation), trained, exported, published, promoted. Six
    epochs: a model near 90% accuracy, so a shift in the class mix shows in its predictions (two: ~65%)."""
    tmp = tmp_path_factory.mktemp("monitoring")
    shrunk = {"data.synthetic.per_class": 40, "data.val_fraction": 0.5, "train.batch_size": 32, "train.epochs": 6}
    over = tiny_overrides(tmp, **shrunk)
    cfg = load_config("demo", over)
    run_dir = tmp / "run"
    prepared = prepare_dataset(cfg.data, run_dir)
    trained = train_classifier(cfg, prepared, run_dir)
    exported = export_classifier(cfg, prepared, trained, run_dir)
    ref = reference_for_run(cfg, prepared, Path(exported.path), run_dir / "reference")
    metrics = evaluate_on_split(cfg, prepared, Path(exported.path))
    size = {"channels": 3, "height": cfg.data.image_size, "width": cfg.data.image_size}
    headline = {k: v for k, v in metrics.items() if isinstance(v, float)}
    meta = version_metadata(cfg, metrics=headline, classes=prepared.classes, input=size)
    registry = Registry(open_store(cfg.storage.uri))
    version = publish_version(registry, cfg, {"model.onnx": Path(exported.path), **ref.files()}, meta).version
    registry.promote(cfg.name, version)
    production = load_production(registry, cfg.name, tmp / "cache")
    n_val = sum(prepared.counts["val"].values())
    return SimpleNamespace(
        cfg=cfg, tmp=tmp, ref=ref, version=version, production=production, metrics=headline, n_val=n_val
    )


def _draw(published: SimpleNamespace, seed: int, per_class: int = 25) -> Path:
    """A fresh sample of the training generator: same classes, hues and shapes, other random draws."""
    root = published.tmp / f"draw-{seed}-{per_class}"
    if not root.exists():
        synthetic = published.cfg.data.synthetic.model_copy(update={"seed": seed, "per_class": per_class})
        make_shapes_dataset(root, synthetic)
    return root


def _transformed(src: Path, dest: Path, op: Callable[[Image.Image], Image.Image]) -> Path:
    for path in src.rglob("*.png"):
        (dest / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            op(im.convert("RGB")).save(dest / path.relative_to(src))
    return dest


def _scored(published: SimpleNamespace, source: Path | str) -> pd.DataFrame:
    model = published.production.classifier()
    return pd.concat(score_stream(model, image_source(str(source), published.production.classes)), ignore_index=True)


def _store_copy(published: SimpleNamespace, tmp_path: Path) -> str:
    """A store of its own holding the published model (so each flow test has its own prediction log)."""
    shutil.copytree(published.tmp / "store", tmp_path / "store")
    return f"file://{tmp_path / 'store'}"


def test_a_large_batch_is_scored_in_calls_of_bounded_size_with_the_same_result(published, monkeypatch):
    model = published.production.classifier()
    side, channels = model.size, model.channels
    images = np.random.default_rng(0).integers(0, 256, (10, side, side, channels), dtype=np.uint8)
    whole_probs, whole_emb = model.run(images)
    calls = []
    session_run = model.session.run
    model.session = SimpleNamespace(
        run=lambda names, feed: calls.append(len(feed[model.input])) or session_run(names, feed)
    )
    monkeypatch.setattr(ml.monitoring.scoring, "MAX_CALL_VALUES", 3 * side * side * channels)
    probs, emb = model.run(images)
    assert calls == [3, 3, 3, 1]
    np.testing.assert_allclose(probs, whole_probs, atol=1e-6)
    np.testing.assert_allclose(emb, whole_emb, atol=1e-5)


@pytest.mark.slow  # the module's model is trained on first use
def test_reference_holds_properties_predictions_and_a_pca_embedding(published):
    reference = pd.read_parquet(published.ref.reference)
    assert len(reference) == published.ref.rows == published.n_val and reference["readable"].all()  # every val image
    assert 60 <= published.n_val <= 100  # 160 images x 0.5, by hash: Binomial(160, 0.5) = 80 +- 6.3
    assert {"brightness", "contrast", "blur", "width", "height", "red", "green", "blue"} <= set(reference.columns)
    assert {"pred", "confidence", "margin", "entropy"} <= set(reference.columns)
    assert reference["label"].isin(published.production.classes).all()  # the true labels of the validation images
    emb = [c for c in reference.columns if c.startswith("emb_")]
    assert len(emb) == published.ref.dims == MonitorConfig().embedding_dims
    with np.load(published.ref.projection) as z:
        assert z["components"].shape == (16, 512) and z["mean"].shape == (512,)  # resnet10t pools 512 features
    outputs = [o.name for o in ort.InferenceSession(published.production.onnx).get_outputs()]
    assert outputs == ["logits", "probs", "embedding"]
    assert {REFERENCE_FILE, PROJECTION_FILE} <= set(
        Registry(open_store(published.cfg.storage.uri)).metadata("demo", published.version)["files"]
    )


@pytest.mark.slow
def test_same_distribution_does_not_alarm_on_20_seeded_draws(published, capsys):
    reference = pd.read_parquet(published.production.reference)
    results = [
        detect_drift(reference, _scored(published, _draw(published, seed)), MonitorConfig())
        for seed in range(100, 100 + DRAWS)
    ]
    alarms = [(seed, r.groups) for seed, r in zip(range(100, 100 + DRAWS), results, strict=True) if r.drifted]
    with capsys.disabled():
        print(
            f"\nfalse alarms: {len(alarms)} of {DRAWS} draws of 100 images vs a reference of {len(reference)}: {alarms}"
        )
    assert all(r.current_rows == 100 for r in results)
    assert len(alarms) <= 2


def _rows(rng: np.random.Generator, n: int, embedding_shift: float = 0.0) -> pd.DataFrame:
    frame = {c: rng.normal(size=n) for c in ("brightness", "contrast", "blur", "red", "green", "blue")}
    frame |= {"width": np.full(n, 32), "height": np.full(n, 32), "readable": np.ones(n, bool)}
    frame |= {"pred": rng.choice(["circle", "square"], n), "confidence": rng.uniform(0.5, 1, n)}
    frame |= {"margin": rng.uniform(0, 1, n), "entropy": rng.uniform(0, 1, n)}
    return pd.DataFrame(frame | {f"emb_{i}": rng.normal(embedding_shift, 1, n) for i in range(4)})


def test_bonferroni_shares_each_p_value_threshold_among_the_groups_and_leaves_distances_alone():
    rng = np.random.default_rng(0)
    reference, current = _rows(rng, 200), _rows(rng, 200)
    thresholds = {
        (r["group"], r["method"].split(" ")[0]): r["threshold"]
        for r in detect_drift(reference, current, MonitorConfig()).columns
    }
    assert thresholds[("image properties", "ks")] == thresholds[("prediction", "chi2_homogeneity")] == 0.01 / 4
    assert thresholds[("embedding", "domain")] == 0.01 / 4  # 3 column groups + the embedding
    plain = detect_drift(reference, current, MonitorConfig(correction="none")).columns
    assert {r["threshold"] for r in plain} == {0.01}
    distance = MonitorConfig(columns={"blue": {"method": "wasserstein", "threshold": 0.1}})
    assert next(r for r in detect_drift(reference, current, distance).columns if r["column"] == "blue")[
        "threshold"
    ] == pytest.approx(0.1)
    # a strong shift still alarms under the shared threshold
    assert detect_drift(reference, _rows(rng, 200, embedding_shift=1.0), MonitorConfig()).groups["embedding"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shift", "flag"),  # flag: a drifted group or column the shift must raise
    [("darkened", "image properties"), ("blurred", "blur"), ("two classes only", "prediction")],
)
def test_shifted_images_are_detected(published, shift, flag, capsys):
    src = _draw(published, 200, per_class=50 if shift == "two classes only" else 25)
    dest = published.tmp / f"shift-{shift}"
    if shift == "darkened":
        _transformed(src, dest, lambda im: ImageEnhance.Brightness(im).enhance(0.5))
    elif shift == "blurred":
        _transformed(src, dest, lambda im: im.filter(ImageFilter.GaussianBlur(1.2)))
    else:
        for cls in ("circle", "square"):
            shutil.copytree(src / cls, dest / cls)
    result = detect_drift(pd.read_parquet(published.production.reference), _scored(published, dest), MonitorConfig())
    groups = sorted(g for g, d in result.groups.items() if d)
    columns = sorted(r["column"] for r in result.columns if r["drifted"])
    with capsys.disabled():
        print(f"\n{shift}: {result.verdict}; groups {groups}; columns {columns}")
    assert result.verdict == "drift" and flag in groups + columns


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_score_streams_chunks_logs_unreadable_and_monitor_reports(published, tmp_path):
    store = _store_copy(published, tmp_path)
    source = _draw(published, 300, per_class=10)  # 40 images in class folders: labelled by their folder
    (source / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (source / "square" / "empty.png").write_bytes(b"")
    (source / "notes.txt").write_text("not an image: not listed")
    over = {"monitor.batch_size": 8, "monitor.chunk_rows": 15}
    summary = score("demo", str(source), store, over, str(tmp_path / "cache"))
    assert summary["rows"] == 42 and summary["unreadable"] == 2 and summary["labelled"] == 42
    assert len(summary["keys"]) == 3  # 15 + 15 + 12 rows
    parts = [pd.read_parquet(io.BytesIO(open_store(store).get_bytes(k))) for k in summary["keys"]]
    assert [len(p) for p in parts] == [15, 15, 12]
    log = pd.concat(parts, ignore_index=True)
    broken = log[log["file"].str.endswith("broken.png")].iloc[0]
    assert not broken["readable"] and "cannot decode" in broken["error"] and np.isnan(broken["confidence"])
    assert "BytesIO" not in broken["error"]  # PIL's name for bytes in memory: an address, no help
    empty = log[log["file"].str.endswith("empty.png")].iloc[0]
    assert not empty["readable"] and empty["error"] == "empty file (0 bytes)"
    assert (log["model_version"] == published.version).all() and log["timestamp"].notna().all()

    result = monitor(
        "demo", store, "1d", None, {"monitor.min_rows": 20, "monitor.min_labels": 20}, str(tmp_path / "cache")
    )
    assert result["verdict"] in ("drift", "no drift") and result["rows"] == 42
    assert set(result["live"]) == {"accuracy", "macro_f1"}  # labelled by their class folders
    report = Path(result["links"]["report"].removeprefix("file://"))
    html = report.read_text()
    assert "brightness" in html and "chi-square homogeneity" in html and "emb_00" in html  # one widget per column
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["demo-drift"])))
    table = json.loads(found[0].data)
    assert {"group", "column", "score", "verdict"} <= set(table[0]) and any(r["column"] == "pred" for r in table)


def _logged(store: str, keys: list[str]) -> pd.DataFrame:
    parts = [pd.read_parquet(io.BytesIO(open_store(store).get_bytes(k))) for k in keys]
    return pd.concat(parts, ignore_index=True).sort_values("file", ignore_index=True)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("runner", [None, pytest.param("local", marks=pytest.mark.integration)])
def test_sharded_scoring_logs_what_one_stream_logs(published, tmp_path, runner):
    """monitor.shard_files: one task per shard (threads, or a real local Dask cluster of worker processes that
    load the version themselves); the same rows as one stream, in parquet parts that never collide."""
    store = _store_copy(published, tmp_path)
    source = _draw(published, 600, per_class=10)  # 40 images in class folders
    (source / "circle" / "broken.png").write_bytes(b"not an image")
    whole = score("demo", str(source), store, {}, str(tmp_path / "cache"))
    over = {"monitor.shard_files": 12, "monitor.chunk_rows": 5, "monitor.dask_address": runner}
    sharded = score("demo", str(source), store, over, str(tmp_path / "cache"))
    counts = ("rows", "unreadable", "labelled")
    assert [sharded[k] for k in counts] == [whole[k] for k in counts] == [41, 1, 41]
    assert len(sharded["keys"]) == len(set(sharded["keys"])) == 3 + 3 + 3 + 1  # shards of 12, 12, 12, 5 files
    one, shards = _logged(store, whole["keys"]), _logged(store, sharded["keys"])
    assert one["file"].tolist() == shards["file"].tolist() and one["pred"].tolist() == shards["pred"].tolist()
    np.testing.assert_allclose(one["confidence"], shards["confidence"], atol=1e-5)
    assert (shards["run"] == sharded["run"]).all() and (shards["model_version"] == published.version).all()
    assert type(shard_runner(runner)).__name__ == ("DaskTaskRunner" if runner else "ThreadPoolTaskRunner")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_drift_alerts_and_starts_the_retrain_deployment_once_per_window(published, tmp_path, receiver):  # noqa: F811
    store = _store_copy(published, tmp_path)
    dark = _transformed(_draw(published, 400), tmp_path / "dark", lambda im: ImageEnhance.Brightness(im).enhance(0.4))
    score("demo", str(dark), store, {}, str(tmp_path / "cache"))
    deployment_id = retrain.to_deployment(name="drift-test").apply()
    alerts = {"alerts.webhook_url": receiver.url}
    retrain_on = {**alerts, "monitor.retrain_on_drift": True, "monitor.retrain_deployment": "retrain/drift-test"}
    runs = [
        monitor("demo", store, "1d", None, over, str(tmp_path / "cache")) for over in (alerts, retrain_on, retrain_on)
    ]
    assert all(r["verdict"] == "drift" and r["groups"]["image properties"] for r in runs)
    assert [bool(r["retrain_flow_run"]) for r in runs] == [False, True, False]  # only when asked; once per window
    with get_client(sync_client=True) as client:
        started = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    assert [str(r.id) for r in started] == [runs[1]["retrain_flow_run"]]
    sent = sum(len(r["alerts"]) for r in runs)  # + live-metric drops: the dark files sit in class folders (labels)
    drift_texts = [body["text"] for _, body in receiver.wait_for(sent) if "drift over the last 1d" in body["text"]]
    assert all(r["alerts"][0] == "visionflow.drift.detected" for r in runs)
    assert len(drift_texts) == 3 and all("image properties" in t and "report:" in t for t in drift_texts)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("aws_env")
def test_s3_source_is_listed_and_read_through_a_real_s3_server(published, moto_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    client = moto_server.client()
    client.create_bucket(Bucket="incoming")
    source = _draw(published, 500, per_class=3)
    for path in sorted(source.rglob("*.png")):
        client.upload_file(str(path), "incoming", f"batch/{path.relative_to(source)}")
    client.put_object(Bucket="incoming", Key="batch/circle/broken.jpg", Body=b"garbage")
    client.put_object(Bucket="incoming", Key="other/square/0.png", Body=(source / "square" / "0.png").read_bytes())
    frames = score_stream(
        published.production.classifier(), image_source("s3://incoming/batch", ["circle", "square"]), batch_size=4
    )
    client.create_bucket(Bucket="logs")
    written = write_log(open_store("s3://logs/vf"), "demo", "v1", "run1", "s3://incoming/batch", frames, 5)
    assert written.rows == 13 and written.unreadable == 1 and len(written.keys) == 3  # the other/ prefix not listed
    window = read_window(open_store("s3://logs/vf"), "demo", pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1))
    assert len(window) == 13 and window["file"].str.startswith("s3://incoming/batch/").all()
    assert set(window.loc[window["readable"], "label"]) == {"circle", "square", ""}  # triangle, cross: no label


def test_live_metrics_from_a_labels_csv_and_their_drop():
    window = pd.DataFrame(
        {
            "file": [f"/in/a/{i}.png" for i in range(30)],
            "source": "/in",
            "label": "",
            "readable": True,
            "pred": ["circle"] * 20 + ["square"] * 10,
        }
    )
    labels = pd.DataFrame({"path": [f"a/{i}.png" for i in range(30)], "label": ["circle"] * 15 + ["square"] * 15})
    live = live_metrics(attach_labels(window, labels), {"accuracy": 0.95, "macro_f1": 0.95}, MonitorConfig())
    assert live.judged and live.labelled == 30 and live.live["accuracy"] == pytest.approx(25 / 30)
    assert set(live.dropped) == {"accuracy", "macro_f1"}
    few = live_metrics(attach_labels(window, labels.head(5)), {"accuracy": 0.95}, MonitorConfig())
    assert not few.judged and few.dropped == {}  # 5 labels < monitor.min_labels: no verdict


def test_bad_settings_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown column 'brightnes'"):
        resolve_settings({}, {"monitor.columns": {"brightnes": {"threshold": 0.001}}}, SCORING)
    with pytest.raises(ValueError, match="only monitor"):
        resolve_settings({}, {"train.epochs": 3}, SCORING)
    with pytest.raises(ValueError, match="set shard_files too"):
        resolve_settings({}, {"monitor.dask_address": "tcp://scheduler:8786"}, SCORING)
    with pytest.raises(ValueError, match="dask_address"):
        resolve_settings({}, {"monitor.shard_files": 100, "monitor.dask_address": "scheduler:8786"}, SCORING)
    with pytest.raises(SystemExit) as exit_info:
        score_main(["--model", "demo", "--source", str(tmp_path), "--set", "monitor.batch_sise=8"])
    assert exit_info.value.code == 2
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        next(image_source(str(tmp_path / "missing")))


@pytest.mark.parametrize(
    ("main", "args", "says"),
    [
        ("flows.score", ["--source", "{tmp}/typo"], "argument --source: '{tmp}/typo': no such folder"),
        ("flows.select_for_labeling", ["--pool", "file://{tmp}/typo"], "argument --pool: 'file://{tmp}/typo'"),
        ("flows.monitor", ["--labels", "{tmp}/labels.csv"], "argument --labels: '{tmp}/labels.csv': no such file"),
        ("flows.score", ["--source", "{tmp}", "--set", "monitor.batch_size"], "is not of the form key.path=value"),
    ],
)
def test_a_mistyped_argument_exits_2_before_a_flow_run_and_its_crash_alert(tmp_path, capsys, main, args, says):
    import importlib

    run = importlib.import_module(main).main
    with pytest.raises(SystemExit) as exit_info:
        run(["--model", "demo", *[a.format(tmp=tmp_path) for a in args]])
    assert exit_info.value.code == 2 and says.format(tmp=tmp_path) in capsys.readouterr().err


@pytest.mark.slow
def test_too_few_rows_give_no_verdict(published):
    reference = pd.read_parquet(published.production.reference)
    result = detect_drift(reference, reference.head(10), MonitorConfig())
    assert result.verdict == "too few rows" and not result.drifted and result.columns == []
