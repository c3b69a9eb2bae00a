"""Segmentation: losses, foreground-biased crops, tiled inference, metrics, ONNX with dynamic H x W, the flow."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torch import nn

from ml.config.data import SyntheticConfig
from ml.config.run import load_config
from ml.config.training import ModelConfig
from ml.core.seg_metrics import boundary_band, image_scores, postprocess, summarize
from ml.core.tiling import onnx_predictor, predict_tiled, torch_predictor
from ml.data.layouts import index_dataset
from ml.data.synthetic_pages import make_pages_dataset
from ml.export.onnx import export_checked, open_session
from ml.training.datasets import foreground_crop
from ml.training.losses import SegLoss, dice_loss, edge_loss, focal_loss
from ml.training.models import build_model
from tests.conftest import tiny_seg_overrides

CPU = torch.device("cpu")


def _disc_mask(h: int = 32, w: int = 32) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (((yy - 16) ** 2 + (xx - 14) ** 2) < 64).float().view(1, 1, h, w)


# ---- losses


def test_dice_is_zero_for_a_perfect_prediction_and_near_one_for_the_inverse():
    mask = _disc_mask()
    assert dice_loss((mask * 2 - 1) * 30, mask).item() == pytest.approx(0.0, abs=1e-4)
    assert dice_loss((1 - mask * 2) * 30, mask).item() > 0.98


def test_edge_loss_is_zero_for_identical_maps_and_positive_otherwise():
    mask = _disc_mask()
    assert edge_loss(mask, mask).item() == 0.0
    assert edge_loss(torch.roll(mask, 3, dims=3), mask).item() > 0.01
    assert edge_loss(torch.full_like(mask, 0.5), mask).item() > 0.01  # flat grey has no outline


def test_focal_discounts_easy_pixels_and_the_weighted_sum_adds_up():
    mask, logits = _disc_mask(), torch.randn(1, 1, 32, 32)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, mask)
    assert focal_loss(logits, mask, gamma=2.0) < bce
    assert focal_loss(logits, mask, gamma=0.0).item() == pytest.approx(bce.item(), rel=1e-5)
    combined = SegLoss({"bce": 1.0, "dice": 0.5, "edge": 2.0})(logits, mask)
    expected = bce + 0.5 * dice_loss(logits, mask) + 2.0 * edge_loss(torch.sigmoid(logits), mask)
    assert combined.item() == pytest.approx(expected.item(), rel=1e-5)


def test_unknown_or_all_zero_loss_weights_are_config_errors():
    with pytest.raises(ValidationError, match="loss"):
        load_config("demo-seg", ["train.loss={dice: 1, lovasz: 1}"])
    with pytest.raises(ValidationError, match="loss"):
        load_config("demo-seg", ["train.loss={dice: 0}"])


# ---- crops


def test_foreground_crops_contain_ink_with_the_configured_probability():
    # one ink pixel in a 512 x 512 page: a uniform 64 px crop holds it with probability (64/449)^2 ~ 0.02
    image, mask = np.zeros((512, 512, 1), np.uint8), np.zeros((512, 512), np.uint8)
    mask[400, 400] = 1
    uniform_hit, fg = (64 / 449) ** 2, np.flatnonzero(mask)
    n = 4000
    for p in (0.0, 0.5):
        rng = np.random.default_rng(0)
        hits = sum(foreground_crop(image, mask, 64, p, rng, fg)[1].any() for _ in range(n))
        expected = p + (1 - p) * uniform_hit
        assert abs(hits / n - expected) < 4 * np.sqrt(expected * (1 - expected) / n), (p, hits / n)
    rng = np.random.default_rng(1)
    assert all(foreground_crop(image, mask, 64, 1.0, rng)[1].any() for _ in range(200))


def test_crops_stay_inside_and_keep_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    image = np.arange(100 * 80, dtype=np.uint32).reshape(100, 80, 1)
    mask = (np.arange(100 * 80).reshape(100, 80) % 7 == 0).astype(np.uint8)
    for _ in range(50):
        crop, crop_mask = foreground_crop(image, mask, 64, 0.7, rng)
        assert crop.shape == (64, 64, 1) and crop_mask.shape == (64, 64)
        assert np.array_equal(crop_mask, (crop[..., 0] % 7 == 0).astype(np.uint8))


# ---- tiling


class _Pointwise(nn.Module):
    """1x1 convolutions: each output pixel depends on its input pixel only, so tiling must be exact."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Tanh(), nn.Conv2d(4, 2, 1))

    def forward(self, x):
        return self.net(x)


def _conv3() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))


@pytest.mark.parametrize("shape", [(37, 101), (129, 65), (64, 64), (5, 300)])
def test_tiled_prediction_keeps_odd_sizes_and_equals_untiled_for_a_pointwise_net(shape):
    torch.manual_seed(0)
    net, image = _Pointwise().eval(), np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    tiled = predict_tiled(image, torch_predictor(net, CPU), tile=32, overlap=0.25, batch=3)
    with torch.no_grad():
        whole = net(torch.from_numpy(image)[None])[0].numpy()
    assert tiled.shape == (2, *shape)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_tiled_prediction_of_a_convnet_matches_untiled_away_from_padding():
    torch.manual_seed(0)
    net, rng = _conv3().eval(), np.random.default_rng(1)
    small = rng.random((1, 40, 45), dtype=np.float32)  # fits in one 64 px tile: identical inside the border
    with torch.no_grad():
        whole = net(torch.from_numpy(small)[None])[0].numpy()
    tiled = predict_tiled(small, torch_predictor(net, CPU), tile=64)
    np.testing.assert_allclose(tiled[:, 2:-2, 2:-2], whole[:, 2:-2, 2:-2], atol=1e-5)
    large = rng.random((1, 150, 211), dtype=np.float32)  # many tiles: seams are blended away
    with torch.no_grad():
        whole = net(torch.from_numpy(large)[None])[0].numpy()
    tiled = predict_tiled(large, torch_predictor(net, CPU), tile=64, overlap=0.25)
    diff = np.abs(tiled - whole)[:, 2:-2, 2:-2]
    assert diff.max() < 0.02 * np.abs(whole).max() and diff.mean() < 1e-3


# ---- metrics


def test_pixel_metrics_on_hand_made_masks():
    truth = np.zeros((10, 10), np.uint8)
    truth[2:6, 2:6] = 1  # 16 px
    pred = np.zeros_like(truth)
    pred[2:6, 2:4] = 1  # 8 true positives
    pred[8, 8:10] = 1  # 2 false positives; 8 misses
    s = image_scores(pred, truth)
    assert s["precision"] == pytest.approx(8 / 10) and s["recall"] == pytest.approx(8 / 16)
    assert s["f1"] == pytest.approx(2 * 8 / (2 * 8 + 2 + 8)) and s["iou"] == pytest.approx(8 / 18)
    assert image_scores(truth, truth) == {k: 1.0 for k in s}
    empty = np.zeros_like(truth)
    assert image_scores(empty, empty)["f1"] == 1.0 and image_scores(pred, empty)["f1"] == 0.0
    assert summarize([{"f1": 1.0}, {"f1": 0.5}]) == {"f1": 0.75}


def test_edge_iou_counts_only_the_band_inside_the_outline():
    truth = np.zeros((20, 20), np.uint8)
    truth[4:16, 4:16] = 1
    band = boundary_band(truth, 1)
    assert band.sum() == 12 * 12 - 10 * 10  # the outer ring of the square, 1 px wide
    thinner = np.zeros_like(truth)
    thinner[5:15, 5:15] = 1  # 1 px smaller all round: pixel IoU 100/144, but the outlines do not meet
    assert image_scores(thinner, truth, boundary=1)["edge_iou"] == 0.0
    assert image_scores(thinner, truth, boundary=1)["iou"] == pytest.approx(100 / 144)


def test_postprocess_closes_gaps_and_drops_specks():
    pred = np.zeros((20, 20), np.uint8)
    pred[5:8, 2:9] = pred[5:8, 10:18] = 1  # a 3 px stroke broken by a 1 px gap
    pred[15, 15] = 1  # a speck
    out = postprocess(pred, close=3, min_component=5)
    assert out[6, 9] == 1 and out[15, 15] == 0
    assert np.array_equal(postprocess(pred), pred)


# ---- models and ONNX


def test_segmenter_exports_with_dynamic_height_and_width_checked_on_two_sizes(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(task="segment", name="resnet10t", decoder_channels=[32, 16, 8]), 1, 1).eval()
    batches = [torch.rand(2, 1, 64, 64), torch.rand(1, 1, 32, 96)]
    result = export_checked(model, batches, tmp_path / "seg.onnx", opset=17, tolerance=1e-4)
    assert result.max_abs_diff <= 1e-4
    session = open_session(tmp_path / "seg.onnx")
    logits, probs = session.run(None, {"image": np.random.rand(3, 1, 96, 160).astype(np.float32)})
    assert logits.shape == probs.shape == (3, 1, 96, 160)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-6)
    page = np.random.default_rng(0).random((1, 75, 131), dtype=np.float32)  # serving: ORT tiles == torch tiles
    via_onnx = predict_tiled(page, onnx_predictor(session), tile=64)
    np.testing.assert_allclose(via_onnx, predict_tiled(page, torch_predictor(model, CPU), tile=64), atol=1e-4)


def test_gate_and_monitor_metrics_follow_the_task():
    cfg = load_config("demo-seg", ["gate.min.f1=0.5", "gate.min.iou=0.4", "gate.max.loss=2"])
    assert cfg.gate.min == {"f1": 0.5, "iou": 0.4}
    with pytest.raises(ValidationError, match="not produced for model.task=segment"):
        load_config("demo-seg", ["gate.min.accuracy=0.9"])
    with pytest.raises(ValidationError, match="not produced for model.task=classify"):
        load_config("demo", ["gate.min.iou=0.5"])
    with pytest.raises(ValidationError, match="eval.postprocess"):
        load_config("demo-seg", ["eval.postprocess=null", "gate.min.f1_post=0.5"])


# ---- data


def test_synthetic_pages_are_seeded_exact_and_in_the_image_mask_layout(tmp_path):
    cfg = SyntheticConfig(kind="pages", per_class=3, size=64, seed=7)
    a, b = make_pages_dataset(tmp_path / "a", cfg), make_pages_dataset(tmp_path / "b", cfg)
    for name in ("images/0.png", "masks/2.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    image, mask = np.asarray(Image.open(a / "images/1.png")), np.asarray(Image.open(a / "masks/1.png"))
    assert image.shape == mask.shape and set(np.unique(mask)) == {0, 255}
    assert 0.01 < (mask > 0).mean() < 0.4 and image[mask > 0].mean() < image[mask == 0].mean() - 50
    frame = index_dataset(load_config("demo-seg", [f"data.root={a}"]).data)
    assert len(frame) == 3 and all(Path(m).parent.name == "masks" for m in frame["mask"])
    with pytest.raises(FileExistsError):
        make_pages_dataset(a, cfg)


# ---- the flow


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_retrain_flow_trains_gates_and_publishes_a_segmenter(tmp_path):
    from flows.evaluate import evaluate
    from flows.retrain import retrain
    from ml.registry.storage import open_store
    from ml.registry.versions import Registry

    over = tiny_seg_overrides(
        tmp_path,
        **{"data.synthetic.per_class": 10, "eval.overlays": 2, "train.accumulate": 2, "gate.min": {"f1": 0.01}},
    )
    summary = retrain("demo-seg", over)
    assert summary["promoted"] and {"f1", "f1_post", "iou", "edge_iou"} <= set(summary["metrics"])
    assert [r["rule"] for r in summary["gate"]["rules"]][0] == "f1 >= 0.01"
    store = tmp_path / "store" / "models" / "demo-seg" / "versions" / summary["version"]
    assert len(list((store / "plots").glob("overlay-*.png"))) == 2 and (store / "model.onnx").is_file()
    meta = Registry(open_store(over["storage.uri"])).metadata("demo-seg", summary["version"])
    assert meta["config"]["model"]["task"] == "segment"
    assert meta["input"]["size"] == "any multiple of 32" and meta["input"]["tile"] == 64  # tiled, as evaluated

    # flows.evaluate scores the version on pages it never saw, one row per page
    fresh = make_pages_dataset(tmp_path / "fresh", SyntheticConfig(kind="pages", per_class=3, size=96, seed=5))
    result = evaluate("demo-seg", str(fresh), store=over["storage.uri"])  # its holdout table artifact included
    assert result["task"] == "segment" and len(result["metrics"]["per_image"]) == 3 == result["metrics"]["n"]
    assert 0 <= result["metrics"]["f1"] <= 1
