"""Active learning: uncertainty measures, selection strategies, Label Studio tasks (documented shape, brush RLE),
the flow on a folder and on an S3 pool, a segmenter's batch, and closing the loop. A tiny classifier and a tiny
segmenter are trained once for the module (generated shapes and pages) and published to a file store."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from pydantic import ValidationError

from flows.monitor import main as monitor_main
from flows.score import main as score_main
from flows.select_for_labeling import main as select_main
from flows.select_for_labeling import select_for_labeling
from ml.config.production import LabelingConfig
from ml.config.run import load_config
from ml.core.files import sha256_file
from ml.core.tiling import onnx_predictor
from ml.data.layouts import index_dataset
from ml.data.prepare import prepare_dataset
from ml.data.profile import profile_dataset
from ml.data.synthetic import make_shapes_dataset
from ml.data.synthetic_pages import make_pages_dataset
from ml.export.classifier import export_classifier
from ml.export.onnx import open_session
from ml.export.segmenter import export_segmenter
from ml.labeling.annotations import AnnotationRules, import_annotations
from ml.labeling.batch import (
    BatchRequest,
    LabelingBatch,
    labels_from_batches,
    merge_shortlists,
    select_batch,
    training_digests,
)
from ml.labeling.labelstudio import choices_result, mask_to_rle, rle_to_mask
from ml.labeling.scored_pool import PoolFiles, read_pool_file
from ml.labeling.selection import Shortlist, k_center_greedy
from ml.monitoring.log import read_window
from ml.monitoring.production import LABELING, load_production, resolve_settings
from ml.monitoring.reference import reference_for_run
from ml.monitoring.rows import Segmenter, decode
from ml.monitoring.uncertainty import class_uncertainty, pixel_uncertainty
from ml.registry.publish import model_input, publish_version, version_metadata
from ml.registry.storage import open_store
from ml.registry.versions import Registry
from ml.training.classifier import train_classifier
from ml.training.segmenter import train_segmenter
from tests.conftest import tiny_overrides, tiny_seg_overrides
from tests.s3_servers import aws_env, moto_server  # noqa: F401  (fixtures)
from tests.test_profile import noise_png

MODEL = "al-demo"


def _publish(store: str, cfg, files: dict[str, Path], classes: list[str], outputs: list[str]) -> str:
    meta = version_metadata(cfg, metrics={}, classes=classes, input=model_input(cfg, outputs))
    registry = Registry(open_store(store))
    version = publish_version(registry, cfg, files, meta).version
    registry.promote(cfg.name, version)
    return version


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The demo preset shrunk (64 shapes, 1 epoch) as model `al-demo`, with its embedding projection."""
    tmp = tmp_path_factory.mktemp("active-learning")
    cfg = load_config("demo", tiny_overrides(tmp, **{"name": MODEL, "data.synthetic.per_class": 16, "train.epochs": 1}))
    run = tmp / "run"
    prepared = prepare_dataset(cfg.data, run)
    exported = export_classifier(cfg, prepared, train_classifier(cfg, prepared, run), run)
    files = {"model.onnx": Path(exported.path), **reference_for_run(cfg, prepared, Path(exported.path), run).files()}
    version = _publish(cfg.storage.uri, cfg, files, prepared.classes, exported.outputs)
    production = load_production(Registry(open_store(cfg.storage.uri)), MODEL, tmp / "cache")
    ns = {"files": files, "prepared": prepared, "outputs": exported.outputs, "version": version}
    return SimpleNamespace(cfg=cfg, tmp=tmp, production=production, **ns)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """demo-seg shrunk (tests.conftest.tiny_seg_overrides): 6 pages of ~96 px, 64 px crops and tiles, 1 epoch."""
    tmp = tmp_path_factory.mktemp("active-learning-seg")
    cfg = load_config("demo-seg", tiny_seg_overrides(tmp))
    prepared = prepare_dataset(cfg.data, tmp / "run")
    exported = export_segmenter(cfg, prepared, train_segmenter(cfg, prepared, tmp / "run"), tmp / "run")
    _publish(cfg.storage.uri, cfg, {"model.onnx": Path(exported.path)}, prepared.classes, exported.outputs)
    production = load_production(Registry(open_store(cfg.storage.uri)), cfg.name, tmp / "cache")
    return SimpleNamespace(cfg=cfg, tmp=tmp, production=production)


def _pool(ns: SimpleNamespace, name: str, seed: int, per_class: int) -> Path:
    return make_shapes_dataset(
        ns.tmp / name, ns.cfg.data.synthetic.model_copy(update={"seed": seed, "per_class": per_class})
    )


def _store_copy(ns: SimpleNamespace, tmp_path: Path) -> str:
    shutil.copytree(ns.tmp / "store", tmp_path / "store")
    return f"file://{tmp_path / 'store'}"


def check_labelstudio_import(tasks: object, config_xml: str) -> None:
    """Label Studio's documented import shape (guide/predictions; tags Choices and BrushLabels) with the names and
    labels of the project's labeling config: the server itself accepts wrong ones silently (STACK.md)."""
    view = ET.fromstring(config_xml)
    image = view.find("Image")
    assert view.tag == "View" and image is not None and image.get("value") == "$image"
    controls = {el.get("name"): el for el in view if el.tag in ("Choices", "BrushLabels")}
    assert isinstance(tasks, list) and tasks
    versions = set()
    for task in tasks:
        assert set(task) == {"data", "predictions"} and isinstance(task["data"]["image"], str) and task["data"]["image"]
        (prediction,) = task["predictions"]
        assert set(prediction) == {"model_version", "score", "result"} and isinstance(prediction["model_version"], str)
        assert isinstance(prediction["score"], float) and 0 <= prediction["score"] <= 1
        versions.add(prediction["model_version"])
        for result in prediction["result"]:
            control = controls[result["from_name"]]
            labels = {c.get("value") for c in control}
            assert result["to_name"] == control.get("toName") == image.get("name") and isinstance(result["id"], str)
            if result["type"] == "choices":
                assert control.tag == "Choices" and set(result["value"]) == {"choices"}
                assert len(result["value"]["choices"]) == 1 and set(result["value"]["choices"]) <= labels
            else:
                assert result["type"] == "brushlabels" and control.tag == "BrushLabels"
                value, w, h = result["value"], result["original_width"], result["original_height"]
                assert set(value) == {"format", "rle", "brushlabels"} and value["format"] == "rle"
                assert set(value["brushlabels"]) <= labels and isinstance(w, int) and isinstance(h, int)
                assert all(isinstance(b, int) and 0 <= b < 256 for b in value["rle"])
                assert rle_to_mask(value["rle"], h, w).shape == (h, w)  # exactly 4 x W x H values
    assert len(versions) == 1  # one model_version per batch, or Label Studio hides some pre-annotations


def _batch_files(store: str, summary: dict) -> tuple[list, str, pd.DataFrame]:
    s = open_store(store)
    prefix = f"labeling/{summary['model']}/{summary['batch']}/"
    tasks = json.loads(s.get_bytes(prefix + "tasks.json"))
    selection = pd.read_csv(io.BytesIO(s.get_bytes(prefix + "selection.csv")), keep_default_na=False)
    return tasks, s.get_bytes(prefix + "label_config.xml").decode(), selection


# ---- uncertainty and selection on hand-made numbers


def test_training_digests_say_none_where_no_image_file_could_be_copied(tmp_path):
    np.save(tmp_path / "fish.npy", np.zeros((3, 784), np.uint8))  # quickdraw's layout: rows, not files
    assert training_digests(tmp_path) is None and training_digests(tmp_path / "absent") is None
    noise_png(tmp_path / "a" / "x.png", 0)
    assert training_digests(tmp_path) == {sha256_file(tmp_path / "a" / "x.png")}


def test_uncertainty_measures_rank_hand_made_probabilities():
    probs = np.array(
        [
            [0.97, 0.01, 0.01, 0.01],  # sure
            [0.45, 0.45, 0.10, 0.00],  # torn between two: smallest margin
            [0.35, 0.33, 0.32, 0.00],  # torn between three: lowest top probability
            [0.25, 0.25, 0.25, 0.25],  # no idea: highest entropy
        ]
    )
    u = class_uncertainty(probs)
    assert list(np.argsort(-u["least_confidence"])) == [3, 2, 1, 0]
    assert u["margin"][1] == pytest.approx(1.0) and u["margin"][3] == pytest.approx(1.0) and u["margin"][0] < 0.1
    assert u["margin"][1] > u["margin"][2]  # margin and least confidence disagree on rows 1 and 2
    assert list(np.argsort(-u["entropy"])) == [3, 2, 1, 0] and u["entropy"][3] == pytest.approx(np.log(4))


def test_pixel_uncertainty_of_hand_made_maps():
    sure = np.where(np.arange(100).reshape(10, 10) % 2, 0.99, 0.01)
    unsure = np.full((10, 10), 0.5)
    outline = sure.copy()
    outline[0] = 0.6  # one row of 10 unsure pixels
    band = (0.25, 0.75)
    s, u, o = (pixel_uncertainty(m, band) for m in (sure, unsure, outline))
    assert u["entropy"] == pytest.approx(np.log(2)) and u["uncertain_share"] == 1.0 and u["confidence"] == 0.5
    assert s["uncertain_share"] == 0.0 and s["entropy"] < 0.06 and s["confidence"] == pytest.approx(0.99)
    assert o["uncertain_share"] == pytest.approx(0.1) and s["entropy"] < o["entropy"] < u["entropy"]


def _rows(n: int, score: np.ndarray, pred: list[str], emb: np.ndarray) -> pd.DataFrame:
    """Scored rows as ml.labeling.scored_pool yields them; `score` is the entropy column."""
    frame = pd.DataFrame({"file": [f"/pool/{i:03d}.png" for i in range(n)], "sha256": [f"h{i}" for i in range(n)]})
    frame = frame.assign(readable=True, pred=pred, confidence=0.5, margin=0.1, entropy=score)
    return frame.join(pd.DataFrame(emb, columns=[f"emb_{j:02d}" for j in range(emb.shape[1])]))


def test_k_center_greedy_spreads_picks_where_pure_uncertainty_clumps():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    emb = np.repeat(centres, 10, axis=0) + rng.normal(0, 0.1, (40, 2))
    assert sorted(i // 10 for i in k_center_greedy(emb, 4, first=0)) == [0, 1, 2, 3]
    score = np.r_[np.full(10, 1.0), np.full(30, 0.9)] + rng.uniform(0, 0.01, 40)  # cluster 0 is the most uncertain
    frame = _rows(40, score, ["a"] * 40, emb)
    picks = {}
    for strategy in ("uncertainty", "diversity"):
        shortlist = Shortlist(strategy, "entropy", budget=4, candidates=10)
        shortlist.add(frame)
        picks[strategy] = sorted(int(f[6:9]) // 10 for f in shortlist.select()["file"])
    assert picks == {"uncertainty": [0, 0, 0, 0], "diversity": [0, 1, 2, 3]}


def test_balanced_spreads_picks_over_predicted_classes():
    pred = ["cat"] * 12 + ["dog"] * 4 + ["fish"] * 4  # cats are the most uncertain and the most numerous
    score = np.r_[np.linspace(2.0, 1.5, 12), np.linspace(1.0, 0.9, 4), np.linspace(0.8, 0.7, 4)]
    frame = _rows(20, score, pred, np.zeros((20, 2)))
    chosen = {}
    for strategy in ("uncertainty", "balanced"):
        shortlist = Shortlist(strategy, "entropy", budget=6)
        shortlist.add(frame)
        chosen[strategy] = shortlist.select()
    assert set(chosen["uncertainty"]["pred"]) == {"cat"}
    assert chosen["balanced"]["pred"].value_counts().to_dict() == {"cat": 2, "dog": 2, "fish": 2}
    assert list(chosen["balanced"]["file"][:3]) == ["/pool/000.png", "/pool/012.png", "/pool/016.png"]  # each best


@pytest.mark.parametrize("strategy", ["uncertainty", "diversity", "balanced", "random"])
def test_streaming_picks_what_one_pass_picks_and_skips_known_unreadable_and_copies(strategy):
    rng = np.random.default_rng(1)
    frame = _rows(60, rng.uniform(0, 2, 60), list(rng.choice(["a", "b", "c"], 60)), rng.normal(size=(60, 3)))
    frame.loc[5, "readable"] = False
    frame.loc[7, "sha256"] = frame.loc[3, "sha256"]  # the same image under another name
    whole, streamed = (Shortlist(strategy, "entropy", 8, candidates=3, seed=2, skip={"h10", "h11"}) for _ in "ab")
    whole.add(frame)
    for start in range(0, 60, 7):
        streamed.add(frame.iloc[start : start + 7])
    picked = whole.select()
    assert picked.equals(streamed.select()) and len(picked) == 8 and list(picked["rank"]) == list(range(8))
    assert (whole.scored, whole.unreadable, whole.known) == (60, 1, 2)
    assert not {"h10", "h11", "h5"} & set(picked["sha256"]) and picked["sha256"].is_unique
    if strategy == "uncertainty":
        assert picked["score"].tolist() == sorted(frame.drop([5, 7, 10, 11])["entropy"], reverse=True)[:8]
    assert len(streamed.rows) <= (8 if strategy in ("uncertainty", "random") else 24)  # 3 x 8; 8 per class


@pytest.mark.parametrize("strategy", ["uncertainty", "diversity", "balanced", "random"])
def test_shortlists_of_shards_merge_into_the_pools(strategy):
    rng = np.random.default_rng(3)
    frame = _rows(60, rng.uniform(0, 2, 60), list(rng.choice(["a", "b", "c"], 60)), rng.normal(size=(60, 3)))
    same = frame.columns.drop("file")
    frame.loc[40, same] = frame.loc[3, same]  # the same image (bytes, so scores) under another name, in another shard
    whole = Shortlist(strategy, "entropy", 8, candidates=3, seed=2, skip={"h10"})
    whole.add(frame)
    lab = LabelingConfig(strategy=strategy, measure="entropy", budget=8, candidates=3, seed=2)
    shards = []
    for shard, start in enumerate(range(0, 60, 25)):
        part = Shortlist(strategy, "entropy", 8, candidates=3, seed=2 + shard, skip={"h10"})
        part.add(frame.iloc[start : start + 25])
        shards.append(part)
    merged = merge_shortlists(shards, lab)
    assert (merged.scored, merged.known) == (60, 1)
    picked = merged.select()
    assert len(picked) == 8 and picked["sha256"].is_unique and "h10" not in set(picked["sha256"])
    if strategy != "random":  # random draws its own keys per shard: another uniform sample
        assert picked.equals(whole.select())


# ---- Label Studio's brush RLE


def test_brush_rle_follows_the_documented_bit_layout_and_round_trips():
    # mask [[0, 255]] -> RGBA bytes 0,0,0,0,255,255,255,255: header (32-bit count 8, word size 8 - 1 in 5 bits,
    # run fields 3,4,8,16 - 1 in 4 bits each), then two runs: repeat bit 1, field index 00, length 4 - 1 in 3 bits,
    # the byte; zero-padded to whole bytes (always: 81 bits + 7)
    bits = f"{8:032b}" + "00111" + "0010" + "0011" + "0111" + "1111" + "100011" + "0" * 8 + "100011" + "1" * 8
    bits += "0" * (8 - len(bits) % 8)
    expected = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    assert mask_to_rle(np.array([[0, 255]], np.uint8)) == expected
    rng = np.random.default_rng(0)
    long_runs = np.zeros((300, 300), np.uint8)  # a 359,996-byte run: split into 2^16 pieces
    long_runs[-1, -1] = 255
    page = np.zeros((61, 47), np.uint8)
    page[10:40, 5:30] = 255
    for mask in (long_runs, page, (rng.random((23, 17)) > 0.5).astype(np.uint8) * 255, np.zeros((3, 5), np.uint8)):
        assert np.array_equal(rle_to_mask(mask_to_rle(mask), *mask.shape), mask)
    with pytest.raises(ValueError, match="RGBA mask"):
        rle_to_mask(mask_to_rle(page), 47, 60)


# ---- the flow


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_flow_on_a_folder_writes_an_importable_batch_and_skips_known_images(classifier, tmp_path, capsys):
    store = _store_copy(classifier, tmp_path)
    pool = _pool(classifier, "pool-flow", seed=7, per_class=5)  # 20 new shapes
    training_copy = next((classifier.cfg.data.root / "circle").glob("*.png"))
    shutil.copy(training_copy, pool / "already-trained.png")  # in the training data: never selected
    shutil.copy(pool / "square" / "0.png", pool / "square-copy.png")  # one image twice: selected once at most
    (pool / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = ["--model", MODEL, "--pool", str(pool), "--store", store, "--cache-dir", str(tmp_path / "cache")]

    assert select_main([*args, "--budget", "8"]) == 0
    out = capsys.readouterr().out
    first = json.loads(out.strip().splitlines()[-1])
    assert (first["scored"], first["unreadable"], first["known"], first["selected"]) == (23, 1, 1, 8)
    assert f"tasks:    {first['links']['tasks']}" in out and first["training_images"] == 64
    tasks, config_xml, selection = _batch_files(store, first)
    check_labelstudio_import(tasks, config_xml)
    assert list(selection.columns) == ["rank", "path", "sha256", "uncertainty", "measure", "predicted", "confidence",
                                       "strategy"]  # fmt: skip
    assert [t["data"]["path"] for t in tasks] == list(selection["path"]) and (
        selection["strategy"] == "diversity"
    ).all()
    served = [pool.parent / unquote(t["data"]["image"].removeprefix("/data/local-files/?d=")) for t in tasks]
    assert served == [Path(t["data"]["path"]) for t in tasks] and all(p.is_file() for p in served)
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={pool.parent}" in first["recipe"] and str(pool) in first["recipe"]
    assert [t["predictions"][0]["model_version"] for t in tasks] == [classifier.version] * 8
    assert {t["predictions"][0]["result"][0]["value"]["choices"][0] for t in tasks} <= set(
        classifier.production.classes
    )
    assert all(sha256_file(p) == h for p, h in zip(selection["path"], selection["sha256"], strict=True))
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"{MODEL}-labeling"])))
    assert any(first["batch"] in a.data and a.data.count("data:image/png;base64,") == 8 for a in found)

    assert select_main([*args, "--budget", "100", "--set", "labeling.strategy=uncertainty"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _, _, again = _batch_files(store, second)
    assert second["selected"] == 12 and not set(again["sha256"]) & set(selection["sha256"])  # the 20 new, once each
    assert (again["uncertainty"].diff().dropna() <= 0).all()  # most uncertain first
    fresh = {sha256_file(p) for p in pool.glob("*/*.png")}
    assert set(again["sha256"]) | set(selection["sha256"]) == fresh


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_pool_in_shards_gives_the_batch_one_pass_gives(classifier, tmp_path):
    """monitor.shard_files: shortlist-shard tasks (threads here; a Dask cluster with monitor.dask_address) whose
    shortlists merge into the pool's: the same counts and the same diversity picks as one pass."""
    pool = _pool(classifier, "pool-shards", seed=11, per_class=6)  # 24 new shapes
    shutil.copy(next((classifier.cfg.data.root / "circle").glob("*.png")), pool / "already-trained.png")
    runs = {}
    for name, over in (("one pass", {}), ("shards", {"monitor.shard_files": 7})):
        store = _store_copy(classifier, tmp_path / name)
        summary = select_for_labeling(MODEL, str(pool), store, 8, over, str(tmp_path / "cache"))
        runs[name] = summary, _batch_files(store, summary)[2]
    (one, first), (sharded, second) = runs["one pass"], runs["shards"]
    counts = ("scored", "known", "selected", "training_images")
    assert [sharded[k] for k in counts] == [one[k] for k in counts] == [25, 1, 8, 64]
    assert list(second["path"]) == list(first["path"]) and (second["strategy"] == "diversity").all()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("aws_env", "prefect_harness")
def test_flow_on_an_s3_pool_gives_presigned_urls(classifier, moto_server, monkeypatch):  # noqa: F811
    client = moto_server.client()
    for bucket in ("pool", "models"):
        client.create_bucket(Bucket=bucket)
    source = _pool(classifier, "pool-s3", seed=8, per_class=3)
    for path in sorted(source.rglob("*.png")):
        client.upload_file(str(path), "pool", f"unlabeled/{path.relative_to(source)}")
    client.put_object(Bucket="pool", Key="unlabeled/broken.jpg", Body=b"garbage")
    store = "s3://models/vf"
    with monkeypatch.context() as env:  # publish through the AWS variable; the flow gets the endpoint as a parameter
        env.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
        _publish(store, classifier.cfg, classifier.files, classifier.prepared.classes, classifier.outputs)
    cache, over = str(classifier.tmp / "cache-s3"), {"labeling.strategy": "balanced"}
    summary = select_for_labeling(MODEL, "s3://pool/unlabeled", store, 5, over, cache, moto_server.endpoint)
    assert (summary["scored"], summary["unreadable"], summary["selected"]) == (13, 1, 5)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    tasks, config_xml, selection = _batch_files(store, summary)
    check_labelstudio_import(tasks, config_xml)
    assert selection["path"].str.startswith("s3://pool/unlabeled/").all()
    for task in tasks:
        url = task["data"]["image"]
        assert url.startswith(moto_server.endpoint + "/pool/unlabeled/") and "X-Amz-Signature=" in url
        with urllib.request.urlopen(url, timeout=10) as response:  # what Label Studio's browser fetches
            data = response.read()
        assert data == (source / task["data"]["path"].removeprefix("s3://pool/unlabeled/")).read_bytes()


@pytest.mark.slow
def test_segmenter_batch_attaches_its_predicted_mask_as_brush_rle(segmenter, tmp_path):
    pool = make_pages_dataset(tmp_path / "pages", segmenter.cfg.data.synthetic.model_copy(update={"seed": 5}))
    production, store = segmenter.production, f"file://{tmp_path / 'store'}"
    over = {"labeling.budget": 3, "labeling.measure": "uncertain_share", "labeling.strategy": "uncertainty"}
    settings = resolve_settings(production.config, over, LABELING)
    lab, mon = settings.labeling, settings.monitor
    batch = select_batch(open_store(store), production, BatchRequest(str(pool / "images"), lab, mon, "b1"))
    assert (batch.scored, batch.selected, batch.training_images) == (6, 3, 6)  # 6 pages; their masks are not images
    tasks, config_xml, selection = _batch_files(store, batch.to_dict())
    check_labelstudio_import(tasks, config_xml)
    assert "<BrushLabels" in config_xml and (selection["predicted"] == "foreground").all()
    assert (selection["uncertainty"].diff().dropna() <= 0).all() and selection["measure"].eq("uncertain_share").all()
    seg, predict = Segmenter.of(production), onnx_predictor(open_session(Path(production.onnx)))
    for task in tasks:
        image = decode(Path(task["data"]["path"]).read_bytes(), production.channels)
        expected = (seg.foreground(image, predict) > seg.threshold).astype(np.uint8) * 255
        (result,) = task["predictions"][0]["result"] or [None]
        assert result is not None or not expected.any()
        if result is not None:
            assert (result["original_height"], result["original_width"]) == image.shape[:2]
            assert np.array_equal(rle_to_mask(result["value"]["rle"], *image.shape[:2]), expected)
    diverse_lab = lab.model_copy(update={"strategy": "diversity"})  # thumbnails stand in for the embeddings
    diverse = select_batch(open_store(store), production, BatchRequest(str(pool / "images"), diverse_lab, mon, "b2"))
    assert (diverse.selected, diverse.known) == (3, 3)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness")
def test_segmenter_is_scored_into_the_prediction_log_and_not_drift_monitored(segmenter, tmp_path, capsys):
    pool = make_pages_dataset(tmp_path / "pages", segmenter.cfg.data.synthetic.model_copy(update={"seed": 6}))
    (pool / "images" / "broken.png").write_bytes(b"not a png")
    store = f"file://{tmp_path / 'store'}"
    shutil.copytree(segmenter.tmp / "store", tmp_path / "store")
    args = ["--model", segmenter.cfg.name, "--store", store, "--cache-dir", str(tmp_path / "cache")]
    assert score_main([*args, "--source", str(pool / "images")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] == 7
    log = read_window(open_store(store), segmenter.cfg.name, pd.Timestamp(0, tz="UTC"))
    readable = log[log["readable"]]
    assert len(readable) == 6 and readable["uncertain_share"].between(0, 1).all()
    assert (readable["pred"] == "foreground").all() and (readable["width"] > 0).all()
    assert "cannot decode" in log.loc[~log["readable"], "error"].iloc[0]
    assert monitor_main(args) == 1
    assert "not drift-monitored" in capsys.readouterr().out


# ---- closing the loop


@pytest.mark.slow
def test_labelled_images_back_in_the_data_change_the_fingerprint_and_count_per_batch(classifier, tmp_path):
    store = open_store(_store_copy(classifier, tmp_path))
    pool = _pool(classifier, "pool-loop", seed=9, per_class=4)
    settings = resolve_settings(classifier.production.config, {"labeling.strategy": "uncertainty"}, LABELING)
    lab, mon = settings.labeling, settings.monitor

    def batch(budget: int, name: str) -> LabelingBatch:
        req = BatchRequest(str(pool), lab.model_copy(update={"budget": budget}), mon, name)
        return select_batch(store, classifier.production, req)

    b1 = batch(5, "b1")
    b2 = batch(3, "b2")
    assert (b1.selected, b2.selected, b2.known) == (5, 3, 5)
    data = classifier.cfg.data.model_copy(update={"root": tmp_path / "data"})
    shutil.copytree(classifier.cfg.data.root, data.root)
    before = prepare_dataset(data, tmp_path / "before")
    assert labels_from_batches(store, MODEL, before) == {}
    picked = [Path(p) for b in ("b1", "b2") for p in _batch_files(store.url(), {"model": MODEL, "batch": b})[2]["path"]]
    for i, path in enumerate(picked[:7]):  # the annotator's labels: the class folder each image was drawn for
        shutil.copy(path, data.root / path.parent.name / f"labelled-{i}.png")
    after = prepare_dataset(data, tmp_path / "after")
    assert after.fingerprint != before.fingerprint
    assert sum(map(sum, (c.values() for c in after.counts.values()))) == 64 + 7
    assert labels_from_batches(store, MODEL, after) == {"b1": 5, "b2": 2}
    profile = profile_dataset(index_dataset(data), data.root, tmp_path / "profile-cache.parquet").frame
    profile.to_parquet(tmp_path / "profile.parquet")  # what validation hands the retrain: sha256 already known
    with_profile = dataclasses.replace(after, profile=str(tmp_path / "profile.parquet"))
    assert labels_from_batches(store, MODEL, with_profile) == {"b1": 5, "b2": 2}
    rest = batch(100, "b3")
    assert rest.selected == 16 - 8 and rest.known == 8


# ---- bad input


def test_bad_settings_fail_before_any_work_with_the_rule(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        select_main(["--model", MODEL, "--pool", str(tmp_path), "--set", "labeling.strategy=smartest"])
    assert exit_info.value.code == 2 and "strategy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        select_main(["--model", MODEL, "--pool", str(tmp_path), "--budget", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="only labeling"):
        resolve_settings({}, {"train.epochs": 3}, LABELING)
    with pytest.raises(ValidationError, match="uncertain_band"):
        LabelingConfig(uncertain_band=(0.8, 0.2))
    shortlist = Shortlist("uncertainty", "uncertain_share", budget=2)
    with pytest.raises(ValueError, match="segmenter"):
        shortlist.add(_rows(3, np.ones(3), ["a"] * 3, np.zeros((3, 2))))
    files = PoolFiles(str(tmp_path / "pool"), LabelingConfig(document_root=tmp_path))
    assert files.url(str(tmp_path / "pool" / "a b" / "c.png")) == "/data/local-files/?d=pool/a%20b/c.png"
    with pytest.raises(ValueError, match="document_root"):
        files.url("/elsewhere/c.png")
    with pytest.raises(ValueError, match="subfolder"):  # Label Studio refuses a local storage on its root
        PoolFiles(str(tmp_path), LabelingConfig(document_root=tmp_path))


def test_annotations_in_data_under_another_label_are_conflicts_and_refuse_lists_disagreements(tmp_path):
    pool, data = tmp_path / "pool", tmp_path / "data"
    (data / "circle").mkdir(parents=True)
    files = [noise_png(pool / f"{i}.png", seed=i) for i in range(3)]
    shutil.copy(files[0], data / "circle" / "old.png")  # already labelled circle

    def task(i: int, *labels: str) -> dict:
        results = [[choices_result(label, "choice", "image")] for label in labels]
        data_ = {"path": str(files[i]), "sha256": sha256_file(files[i])}
        return {"id": i, "data": data_, "annotations": [{"result": r, "was_cancelled": False} for r in results]}

    tasks = [task(0, "square"), task(1, "square", "square", "circle"), task(2, "circle")]
    refuse = import_annotations(tasks, AnnotationRules("classify", "choice", "mask", "refuse"), data, read_pool_file)
    assert [c["sha256"] for c in refuse.conflicts] == [tasks[0]["data"]["sha256"]] and refuse.added == {"circle": 1}
    assert [d["task"] for d in refuse.disagreements] == [1]
    majority = import_annotations(
        tasks, AnnotationRules("classify", "choice", "mask", "majority"), data, read_pool_file
    )
    assert (majority.added, majority.already, len(majority.conflicts)) == ({"square": 1}, 1, 1)
