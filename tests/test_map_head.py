"""model.head=map: a binary classifier that learns from masks where the positive class is, trained on crops.

The data is generated here: grey textured tiles, the "defective" ones with one dark blob a few pixels wide and
its mask in masks/, the layout of a surface-defect dataset (class folders plus <root>/masks/<id>.png).
"""

from pathlib import Path

import numpy as np
import prefect  # noqa: F401  (before flows.*, as in the other flow tests)
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from ml.config.run import RunConfig, load_config
from ml.data.errors import DatasetError
from ml.data.prepare import prepare_dataset
from ml.evaluation.classifier import evaluate_classifier
from ml.export.classifier import export_classifier
from ml.export.onnx_eval import evaluate_on_split
from ml.training.classifier import datasets, train_classifier
from ml.training.datasets import CropDataset
from ml.training.losses import MapLoss, SegLoss
from ml.training.models import MapClassifier, build_model
from tests.conftest import tiny_overrides

SIZE = 64


def write_blob_tiles(root: Path, per_class: int = 40, seed: int = 0) -> Path:
    """<root>/ok/*.png and <root>/defective/*.png (64 px grey), masks/<id>.png for the defective ones."""
    rng = np.random.default_rng(seed)
    for sub in ("ok", "defective", "masks"):
        (root / sub).mkdir(parents=True)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for label in ("ok", "defective"):
        for i in range(per_class):
            stripes = 0.08 * np.sin(xx / rng.uniform(1.5, 3.0) + rng.uniform(0, 6))  # a brushed-metal texture
            img = rng.uniform(0.45, 0.6) + stripes + rng.normal(0, 0.03, (SIZE, SIZE))
            if label == "defective":
                cy, cx, r = *rng.integers(8, SIZE - 8, 2), rng.uniform(2.0, 3.5)
                blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                img[blob] -= 0.35
                Image.fromarray((blob * 255).astype(np.uint8)).save(root / "masks" / f"{label}_{i}.png")
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / label / f"{label}_{i}.png")
    return root


def map_cfg(tmp: Path, **extra) -> RunConfig:
    overrides = {
        "data.root": str(tmp / "tiles"),
        "data.classes": ["ok", "defective"],
        "data.channels": 1,
        "data.image_size": SIZE,
        "data.crop_size": 32,
        "data.foreground_crop": 0.5,
        "data.crops_per_image": 2,
        "model.name": "resnet10t",
        "model.head": "map",
        "train.mask_loss": 1.0,
        "train.lr": 0.003,
        "train.epochs": 6,
        "train.monitor": "auroc",
        "eval.decision": "f1",
        **extra,
    }
    return load_config("demo", tiny_overrides(tmp, **overrides))


def test_map_head_options_are_checked_before_any_work(tmp_path):
    with pytest.raises(ValidationError, match="binary classifiers only"):
        map_cfg(tmp_path, **{"data.classes": ["a", "b", "c"]})
    with pytest.raises(ValidationError, match="crop_size 96 > data.image_size 64"):
        map_cfg(tmp_path, **{"data.crop_size": 96})
    with pytest.raises(ValidationError, match="set model.head=map"):
        map_cfg(tmp_path, **{"model.head": "pool"})


def test_map_model_returns_class_logits_and_in_training_its_map():
    cfg = map_cfg(Path("unused"))
    model = build_model(cfg.model, 1, 2)
    assert isinstance(model, MapClassifier)
    logit_map = model.train()(torch.rand(3, 1, 64, 64))[1]
    logits = model.eval()(torch.rand(3, 1, 96, 96))  # any size: the maximum is over however many cells
    assert logits.shape == (3, 2) and torch.all(logits[:, 0] == 0)
    assert logit_map.shape[:2] == (3, 1) and logit_map.shape[-1] > 1
    logits, embedding = model.logits_and_embedding(torch.rand(3, 1, 64, 64))
    assert embedding.shape[0] == 3 and embedding.ndim == 2


def test_mask_term_rewards_a_map_that_points_at_the_defect():
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 4:8, 4:8] = 1
    on_it, elsewhere = torch.full((1, 1, 4, 4), -6.0), torch.full((1, 1, 4, 4), -6.0)
    on_it[..., 0, 0], elsewhere[..., 3, 3] = 6.0, 6.0
    loss = MapLoss(torch.nn.CrossEntropyLoss(), SegLoss({"bce": 1.0}), weight=1.0)
    label = torch.tensor([1])
    as_output = {name: (MapClassifier._logits(m), m) for name, m in (("on", on_it), ("off", elsewhere))}
    assert loss(as_output["on"], label, mask) < loss(as_output["off"], label, mask)  # same image logit, other place
    assert loss(as_output["on"], label) == loss(as_output["off"], label)  # without a mask: the class loss only


def test_crop_labels_follow_the_mask(tmp_path):
    write_blob_tiles(tmp_path / "tiles", per_class=6)
    cfg = map_cfg(tmp_path)
    train, val = datasets(cfg, prepare_dataset(cfg.data, tmp_path / "prep"))
    assert isinstance(train, CropDataset) and len(train) == 2 * len(train.labels)
    torch.manual_seed(0)
    items = [train[i] for i in range(len(train))] * 4
    assert all(x.shape == (1, 32, 32) and mask.shape == (1, 32, 32) for x, _, mask in items)
    assert all(label == 1 for _, label, mask in items if mask.any())  # a crop on the defect is positive
    assert {label for _, label, mask in items if not mask.any()} == {0}  # beside it, or a clean tile: negative
    assert val[0][0].shape == (1, SIZE, SIZE)  # validation sees the whole (resized) tile


def test_mask_loss_without_masks_names_the_folder(tmp_path):
    write_blob_tiles(tmp_path / "tiles", per_class=6)
    for f in (tmp_path / "tiles" / "masks").iterdir():
        f.unlink()
    (tmp_path / "tiles" / "masks").rmdir()
    cfg = map_cfg(tmp_path)
    with pytest.raises(DatasetError, match=r"tiles: train.mask_loss needs masks"):
        datasets(cfg, prepare_dataset(cfg.data, tmp_path / "prep"))


@pytest.mark.slow
def test_map_head_finds_small_defects_and_exports(tmp_path):
    write_blob_tiles(tmp_path / "tiles")
    cfg = map_cfg(tmp_path, **{"train.mixup": 0.2, "train.mixup_prob": 0.5, "eval.tta": ["hflip"], "export.tta": True})
    prepared = prepare_dataset(cfg.data, tmp_path / "prep")
    run_dir = tmp_path / "run"
    trained = train_classifier(cfg, prepared, run_dir)
    assert all(np.isfinite(r["val_auroc"]) for r in trained.history)  # what train.monitor=auroc selects by
    metrics = evaluate_classifier(cfg, prepared, trained, run_dir).metrics
    assert metrics["auroc"] > 0.9 and metrics["macro_f1"] > 0.8, metrics
    exported = export_classifier(cfg, prepared, trained, run_dir)
    onnx = evaluate_on_split(cfg, prepared, Path(exported.path))
    assert onnx["auroc"] > 0.9
