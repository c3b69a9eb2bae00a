"""The labeling round trip against a real Label Studio server (tests.label_studio_server): select a batch, push it,
annotate through the API as annotators do (a skipped task, a two-annotator disagreement), pull it into the training
data, and check the masks pixel-exact against the SDK's own RLE decoder, run in the server's environment; and the
whole loop through the flows: select_for_labeling pushes, flows.import_labels pulls, and a 1-epoch retrain on
the data trains on the imported files (its dataset counts include them) and its version records the batch
(labels_from_batches)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from flows.import_labels import main as import_main
from flows.retrain import retrain
from flows.select_for_labeling import select_for_labeling
from ml.data.layouts import index_dataset
from ml.data.masks import load_mask
from ml.data.synthetic import make_shapes_dataset
from ml.data.synthetic_pages import make_pages_dataset
from ml.labeling import studio_server as ls
from ml.labeling.annotations import AnnotationRules, import_annotations
from ml.labeling.batch import BatchRequest, select_batch
from ml.labeling.labelstudio import brush_result, choices_result, rle_to_mask
from ml.labeling.round_trip import batch_tasks, push_to_studio
from ml.labeling.scored_pool import PoolFiles, read_pool_file
from ml.labeling.studio_api import StudioApi
from ml.monitoring.production import LABELING, resolve_settings
from ml.registry.storage import open_store
from ml.registry.versions import Registry
from tasks.labeling import studio_api
from tests.conftest import tiny_overrides
from tests.test_active_learning import classifier, segmenter  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    """A Label Studio server whose document root is a fresh folder (pools go in subfolders of it)."""
    start = time.monotonic()
    why = ls.install()
    if why is not None:
        pytest.skip(why)
    installed = time.monotonic()
    root = tmp_path_factory.mktemp("ls-root")
    server = ls.start(tmp_path_factory.mktemp("ls-data"), root)
    print(f"label studio: install {installed - start:.1f} s, start {time.monotonic() - installed:.1f} s")
    yield server
    ls.stop(server)


def _push(store, production, pool: Path, studio, budget: int):
    over = {
        "labeling.budget": budget,
        "labeling.strategy": "uncertainty",
        "labeling.document_root": str(studio.document_root),
    }
    settings = resolve_settings(production.config, over, LABELING)
    batch = select_batch(store, production, BatchRequest(str(pool), settings.labeling, settings.monitor, "b1"))
    api = StudioApi(studio.url, studio.token)
    files = PoolFiles(str(pool), settings.labeling)
    return settings.labeling, api, push_to_studio(store, api, production, settings.labeling, files, batch)


def test_classifier_round_trip(classifier, studio, tmp_path):  # noqa: F811
    synthetic = classifier.cfg.data.synthetic.model_copy(update={"seed": 31, "per_class": 2})
    pool = make_shapes_dataset(studio.document_root / "shapes", synthetic)
    shutil.copytree(classifier.tmp / "store", tmp_path / "store")
    store = open_store(f"file://{tmp_path / 'store'}")
    lab, api, pushed = _push(store, classifier.production, pool, studio, budget=5)
    ids = list(pushed["tasks"].values())
    assert len(ids) == 5
    served = api.http.get(api.tasks(pushed["project"])[0]["data"]["image"])
    assert served.status_code == 200 and served.content[:4] == b"\x89PNG"  # the image displays
    second = api.user("second@example.com")
    classes = classifier.production.classes
    pick = lambda label: [choices_result(label, lab.choices_name, lab.image_name)]  # noqa: E731
    api.annotate(ids[0], pick(classes[0]))
    api.annotate(ids[1], pick(classes[1]))
    api.annotate(ids[2], [], cancelled=True)  # skipped
    api.annotate(ids[3], pick(classes[0]))  # two annotators disagree
    api.annotate(ids[3], pick(classes[1]), user=second)
    tasks = batch_tasks(store, api, classifier.production.model, "b1")
    rules = AnnotationRules("classify", lab.choices_name, lab.brush_name, "majority")
    data = tmp_path / "data"
    got = import_annotations(tasks, rules, data, read_pool_file)
    assert (got.tasks, got.added, got.skipped, got.unannotated) == (5, {classes[0]: 1, classes[1]: 1}, 1, 1)
    assert len(got.disagreements) == 1 and got.disagreements[0]["task"] == ids[3]
    assert sorted(p.parent.name for p in data.glob("*/*.png")) == sorted(classes[:2])
    again = import_annotations(tasks, rules, data, read_pool_file)
    assert (again.added, again.already) == ({}, 2)  # importing twice adds nothing
    print("classifier import:", json.dumps(got.to_dict()))


def test_segmenter_round_trip_masks_match_the_sdk_decoder(segmenter, studio, tmp_path):  # noqa: F811
    pool = make_pages_dataset(
        studio.document_root / "pages", segmenter.cfg.data.synthetic.model_copy(update={"seed": 8})
    )
    images = pool / "images"
    shutil.copytree(segmenter.tmp / "store", tmp_path / "store")
    store = open_store(f"file://{tmp_path / 'store'}")
    lab, api, pushed = _push(store, segmenter.production, images, studio, budget=3)
    ids = list(pushed["tasks"].values())
    tasks = {t["id"]: t for t in api.tasks(pushed["project"])}
    rng = np.random.default_rng(0)
    drawn = {}
    for tid in ids[:2]:
        path = Path(tasks[tid]["data"]["path"])
        truth = load_mask(str(pool / "masks" / (path.stem + ".png")))
        noisy = truth ^ (rng.random(truth.shape) < 0.02).astype(np.uint8)
        drawn[tid] = noisy
        api.annotate(tid, [brush_result(noisy, "foreground", lab.brush_name, lab.image_name, "r1")])
    api.annotate(ids[2], [], cancelled=True)
    pulled = batch_tasks(store, api, segmenter.production.model, "b1")
    rles = [r for t in pulled for a in t["annotations"] for r in a["result"]]
    sdk = subprocess.run(
        [str(ls.ls_python()), "-c",
         "import json,sys\nfrom label_studio_sdk.converter.brush import decode_rle\n"
         "print(json.dumps([decode_rle(r['value']['rle']).tolist() for r in json.load(sys.stdin)]))"],
        input=json.dumps(rles), capture_output=True, text=True, check=True,
    )  # fmt: skip
    for r, flat in zip(rles, json.loads(sdk.stdout), strict=True):
        h, w = r["original_height"], r["original_width"]
        theirs = np.asarray(flat, np.uint8).reshape(h, w, 4)[:, :, 3]
        assert np.array_equal(rle_to_mask(r["value"]["rle"], h, w), theirs)  # pixel-exact
    data = tmp_path / "data"
    rules = AnnotationRules("segment", lab.choices_name, lab.brush_name, "majority")
    got = import_annotations(pulled, rules, data, read_pool_file)
    assert (got.added, got.skipped) == ({"foreground": 2}, 1)
    for tid, mask in drawn.items():
        name = tasks[tid]["data"]["sha256"][:16]
        assert np.array_equal(load_mask(str(data / "masks" / f"{name}.png")), mask)
        assert (data / "images" / f"{name}.png").is_file()
    print("segmenter import:", json.dumps(got.to_dict()), f"RLE checked against the SDK: {len(rles)} masks")


@pytest.mark.usefixtures("prefect_harness")
def test_the_flows_push_pull_and_a_retrain_counts_the_batch(classifier, studio, tmp_path, monkeypatch, capsys):  # noqa: F811
    pool = make_shapes_dataset(
        studio.document_root / "flow-shapes",
        classifier.cfg.data.synthetic.model_copy(update={"seed": 41, "per_class": 2}),
    )
    shutil.copytree(classifier.tmp / "store", tmp_path / "store")
    store, cache = f"file://{tmp_path / 'store'}", str(tmp_path / "cache")
    over = {"labeling.label_studio.url": studio.url, "labeling.document_root": str(studio.document_root)}
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    lab = resolve_settings(classifier.production.config, over, LABELING).labeling
    with pytest.raises(RuntimeError, match="LABEL_STUDIO_API_KEY.*Prefect Secret block 'label-studio-api-key'"):
        studio_api(lab)  # no key anywhere: the error names both places
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", studio.token)
    selected = select_for_labeling(classifier.production.model, str(pool), store, 5, over, cache)
    pushed = selected["label_studio"]
    assert len(pushed["tasks"]) == 5 and pushed["url"] == studio.url
    api = StudioApi(studio.url, studio.token)
    ids = set(pushed["tasks"].values())  # the model's project also holds the first test's batch
    tasks = sorted((t for t in api.tasks(pushed["project"]) if t["id"] in ids), key=lambda t: t["id"])
    for task in tasks[:3]:  # the annotator gives the true class (the folder the image was drawn for)
        truth = Path(task["data"]["path"]).parent.name
        api.annotate(task["id"], [choices_result(truth, lab.choices_name, lab.image_name)])
    api.annotate(tasks[3]["id"], [], cancelled=True)  # skipped; tasks[4] stays unannotated
    data = classifier.cfg.data.model_copy(update={"root": tmp_path / "data"})
    shutil.copytree(classifier.cfg.data.root, data.root)
    before = len(index_dataset(data))
    args = [
        "--model",
        classifier.production.model,
        "--store",
        store,
        "--cache-dir",
        cache,
        "--data-root",
        str(data.root),
    ]
    assert import_main([*args, "--set", f"labeling.label_studio.url={studio.url}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["batches"], summary["tasks"], sum(summary["added"].values())) == ([selected["batch"]], 5, 3)
    assert (summary["skipped"], summary["unannotated"], summary["conflicts"]) == (1, 1, [])
    for task in tasks[:3]:
        label = Path(task["data"]["path"]).parent.name
        assert (data.root / label / f"{task['data']['sha256'][:16]}.png").is_file()
    export = tmp_path / "export.json"  # the server's own JSON export: the same tasks, already in the data
    everything = {"exportType": "JSON", "download_all_tasks": "true"}  # unannotated tasks too
    export.write_bytes(api.http.get(f"/api/projects/{pushed['project']}/export", params=everything).content)
    assert (
        import_main([*args, "--data-root", str(data.root), "--export", str(export), "--batch", selected["batch"]]) == 0
    )
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["tasks"], again["added"], again["already"], again["skipped"]) == (5, {}, 3, 1)
    # the next retrain, as the nightly deployment runs it (the fixture's config over this data root and store, 1
    # epoch): it trains on the imported files and its version records the batch they came from
    model = classifier.production.model
    over = tiny_overrides(tmp_path, **{"name": model, "data.synthetic.per_class": 16, "train.epochs": 1})
    assert over["data.root"] == str(data.root) and over["storage.uri"] == store
    retrain("demo", over, return_state=True)  # the gate may keep the fixture's champion: the version is published
    registry = Registry(open_store(store))
    meta = registry.metadata(model, registry.versions(model)[-1])
    assert meta["labels_from_batches"] == {selected["batch"]: 3}
    counts = meta["dataset"]["counts"]
    assert sum(n for side in counts.values() for n in side.values()) == before + 3
    print("flow import:", json.dumps(summary), "\nexport import:", json.dumps(again), "\nretrain counts:", counts)
