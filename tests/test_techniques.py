"""Classifier techniques as config options: focal loss, MixUp, flip TTA (evaluation and inside the ONNX graph),
int8 quantisation with its gate rule; each on hand-made tensors or the demo preset shrunk."""

import json
from pathlib import Path

import numpy as np
import onnx
import prefect  # noqa: F401  (before flows.*, as in the other flow tests: ml/ logs outside a flow stay local)
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from flows.retrain import retrain
from ml.config.evaluation import GateConfig
from ml.config.run import load_config
from ml.core.files import sha256_file
from ml.core.metrics import predict
from ml.data.prepare import prepare_dataset
from ml.evaluation.classifier import evaluate_classifier
from ml.evaluation.gate import Candidate, ChampionEval, evaluate_gate, quantization_rules
from ml.evaluation.tta import FlipTTA
from ml.export.classifier import export_classifier
from ml.export.onnx import export_checked, open_session
from ml.export.onnx_eval import evaluate_on_split, onnx_probs
from ml.export.quantize import quantize_classifier, quantize_onnx
from ml.export.step import shipped_evaluation
from ml.registry.storage import open_store
from ml.registry.versions import Registry
from ml.training.classifier import train_classifier
from ml.training.losses import FocalLoss
from ml.training.mixup import MixUp
from tests.conftest import tiny_overrides

TECHNIQUES = {
    "train.classifier_loss": "focal",
    "train.mixup": 0.4,
    "eval.tta": ["hflip", "vflip"],
    "export.tta": True,
    "export.quantize": "static",
    "export.calibration_images": 24,
}


# --- focal loss ---------------------------------------------------------------------------------------------------


def test_focal_loss_down_weights_easy_examples_against_cross_entropy():
    logits = torch.tensor([[6.0, 0.0, 0.0], [0.2, 0.5, 0.0]])  # row 0: right and confident; row 1: wrong
    target = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, target, reduction="none")
    focal = torch.stack([FocalLoss(gamma=2.0)(logits[i : i + 1], target[i : i + 1]) for i in range(2)])
    assert focal[0] / ce[0] < 1e-4  # the easy example almost vanishes...
    assert focal[1] / ce[1] > 0.4  # ...the hard one keeps much of its loss
    assert focal[1] / focal.sum() > ce[1] / ce.sum()  # so the hard one dominates the batch


def test_focal_with_gamma_0_is_cross_entropy_and_weights_act_as_alpha():
    logits, target = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 4
    assert FocalLoss(gamma=0.0)(logits, target) == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)
    smoothed = F.cross_entropy(logits, target, label_smoothing=0.1).item()
    assert FocalLoss(gamma=0.0, label_smoothing=0.1)(logits, target) == pytest.approx(smoothed, rel=1e-6)
    per_sample = [FocalLoss(2.0)(logits[i : i + 1], target[i : i + 1]) for i in range(8)]
    weighted = [FocalLoss(2.0, torch.tensor([3.0, 1, 1, 1]))(logits[i : i + 1], target[i : i + 1]) for i in range(8)]
    for i in range(8):  # class 0 counts 3x, the others as before
        assert weighted[i].item() == pytest.approx(per_sample[i].item() * (3.0 if target[i] == 0 else 1.0), rel=1e-6)
    soft = F.one_hot(target, 4).float()
    assert FocalLoss(2.0)(logits, soft) == pytest.approx(FocalLoss(2.0)(logits, target).item(), rel=1e-6)


# --- MixUp ----------------------------------------------------------------------------------------------------------


def test_mixup_batch_is_a_convex_combination_with_matching_targets():
    n, k = 8, 3
    x = torch.eye(n).view(n, 1, 1, n)  # image i is the unit vector e_i: mixed rows show who was mixed with whom
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    mix = MixUp(alpha=0.4, num_classes=k, seed=3)
    for _ in range(5):
        mixed, soft = mix(x, y)
        weights = mixed.view(n, n)
        assert torch.all(weights >= 0) and torch.allclose(weights.sum(1), torch.ones(n))  # convex
        assert torch.all((weights > 0).sum(1) <= 2)  # each image with one partner
        lam = weights.diagonal()[weights.diagonal() < 1]  # rows mixed with another image share one weight
        assert torch.allclose(lam, lam[0].expand_as(lam)) and 0 < lam[0] < 1
        assert torch.allclose(soft, weights @ F.one_hot(y, k).float())  # targets mixed exactly like the images
        assert torch.allclose(soft.sum(1), torch.ones(n))


def test_mixup_prob_leaves_the_other_batches_one_hot():
    x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 1, 0])
    mix = MixUp(alpha=1.0, num_classes=2, prob=0.5, seed=0)
    unmixed = [torch.equal(out, x) for out, _ in (mix(x, y) for _ in range(200))]
    assert 60 < sum(unmixed) < 140
    assert torch.equal(MixUp(1.0, 2, prob=1e-9)(x, y)[1], F.one_hot(y, 2).float())


# --- TTA ------------------------------------------------------------------------------------------------------------


def _lopsided() -> nn.Module:
    """A linear classifier over pixels: not flip-invariant."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()


def test_tta_averages_the_flipped_views_and_is_flip_invariant():
    model, x = _lopsided(), torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        plain = torch.softmax(model(x), 1)
        tta = torch.softmax(FlipTTA(model, ["hflip", "vflip"])(x), 1)
        views = [x, x.flip(-1), x.flip(-2)]
        assert torch.allclose(tta, torch.stack([torch.softmax(model(v), 1) for v in views]).mean(0), atol=1e-6)
        assert (tta - plain).abs().max() > 1e-3  # a model that is not flip-invariant: TTA changes its answer
        h = FlipTTA(model, ["hflip"])
        assert torch.allclose(h(x), h(x.flip(-1)), atol=1e-5)  # averaged over hflip = blind to hflip


def test_exported_tta_graph_matches_torch_tta(tmp_path):
    from ml.config.training import ModelConfig
    from ml.training.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet10t"), 3, 4).eval()
    batch = torch.rand(6, 3, 32, 32)
    flips = ["hflip", "vflip"]
    result = export_checked(model, batch, tmp_path / "tta.onnx", 17, 1e-4, flips)
    plain = export_checked(model, batch, tmp_path / "plain.onnx", 17, 1e-4)
    assert result.tta == flips and result.outputs == ["logits", "probs", "embedding"]
    images = torch.rand(9, 3, 32, 32)  # another batch size than the traced one
    loader = [(images, torch.zeros(9, dtype=torch.long))]
    torch_tta = predict(FlipTTA(model, flips), loader, torch.device("cpu"))[0]
    onnx_tta = onnx_probs(tmp_path / "tta.onnx", images.numpy())
    assert np.abs(onnx_tta - torch_tta).max() < 1e-5
    assert np.abs(onnx_tta - onnx_probs(tmp_path / "plain.onnx", images.numpy())).max() > 1e-4
    assert plain.tta == []


# --- int8 and its gate rule -------------------------------------------------------------------------------------------


def test_quantized_drop_rule_fails_beyond_tolerance():
    record = {
        "mode": "static",
        "fp32": {"accuracy": 0.95, "size_bytes": 4e6},
        "int8": {"accuracy": 0.92, "size_bytes": 1e6},
        "accuracy_drop": 0.03,
    }
    [row] = quantization_rules(record, 0.01)
    assert not row.passed and row.measured == 0.03 and "0.9500 -> 0.9200" in row.detail
    assert quantization_rules({**record, "accuracy_drop": 0.01}, 0.01)[0].passed
    assert quantization_rules({**record, "accuracy_drop": 218 / 300 - 215 / 300}, 0.01)[0].passed  # 3 of 300 images
    assert not quantization_rules({**record, "accuracy_drop": 0.0101}, 0.01)[0].passed
    assert quantization_rules({**record, "accuracy_drop": -0.02}, 0.0)[0].passed  # int8 better: fine
    assert not quantization_rules(None, 0.01)[0].passed  # asked for but not measured
    assert quantization_rules(record, None) == []
    champion = ChampionEval(None)
    report = evaluate_gate(Candidate({}, quantization=record), champion, GateConfig(max_quantized_drop=0.05))
    assert report.passed
    report = evaluate_gate(Candidate({}, quantization=record), champion, GateConfig(max_quantized_drop=0.02))
    assert not report.passed and report.failed[0].rule == "int8 accuracy drop vs fp32 <= 0.02"


def test_invalid_combinations_fail_before_any_work(tmp_path):
    def load(**extra):
        return load_config("demo", tiny_overrides(tmp_path, **extra))

    with pytest.raises(ValidationError, match="export.tta bakes eval.tta"):
        load(**{"export.tta": True})
    with pytest.raises(ValidationError, match="gate.max_quantized_drop judges the int8"):
        load(**{"gate.max_quantized_drop": 0.01})
    with pytest.raises(ValidationError, match="each flip at most once"):
        load(**{"eval.tta": ["hflip", "hflip"]})
    with pytest.raises(ValidationError, match="classifier options"):
        load_config("demo-seg", tiny_overrides(tmp_path, **{"train.mixup": 0.2}))
    with pytest.raises(ValidationError, match="classifier_loss"):
        load(**{"train.classifier_loss": "dice"})
    assert load(**TECHNIQUES).export.quantize == "static"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo preset shrunk, with every technique on: trained once for the tests below."""
    tmp = tmp_path_factory.mktemp("techniques")
    cfg = load_config("demo", tiny_overrides(tmp, **TECHNIQUES))
    prepared = prepare_dataset(cfg.data, tmp / "prep")
    run_dir = tmp / "run"
    return cfg, prepared, train_classifier(cfg, prepared, run_dir), run_dir


@pytest.mark.slow
def test_evaluation_reports_metrics_with_and_without_tta(trained):
    cfg, prepared, result, run_dir = trained
    assert result.epochs_run == cfg.train.epochs and np.isfinite(result.history[-1]["train_loss"])
    metrics = evaluate_classifier(cfg, prepared, result, run_dir).metrics
    for name in ("accuracy", "macro_f1", "loss"):
        assert isinstance(metrics[f"{name}_tta"], float) and isinstance(metrics[name], float)
    assert metrics["loss_tta"] != metrics["loss"]  # the flipped views changed the probabilities


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_model_is_smaller_runs_and_stays_close_to_fp32(trained, mode):
    cfg, prepared, result, run_dir = trained
    cfg = cfg.model_copy(update={"export": cfg.export.model_copy(update={"quantize": mode})})
    exported = export_classifier(cfg, prepared, result, run_dir / mode)
    fp32 = Path(exported.path)
    q = quantize_classifier(cfg, prepared, exported)
    record = q.quantization
    assert Path(q.path) != fp32 and q.sha256 == sha256_file(Path(q.path)) and record["published"] == "int8"
    assert q.size_bytes == record["int8"]["size_bytes"] < 0.5 * record["fp32"]["size_bytes"]
    assert q.tta == ["hflip", "vflip"] and q.outputs == exported.outputs
    assert record["calibration_images"] == (24 if mode == "static" else 0)
    assert record["calibration_method"] == ("minmax" if mode == "static" else None)
    assert record["int8"]["accuracy"] == evaluate_on_split(cfg, prepared, Path(q.path))["accuracy"]
    assert record["accuracy_drop"] == record["fp32"]["accuracy"] - record["int8"]["accuracy"]
    assert abs(record["accuracy_drop"]) <= 1 / record["val_images"] + 1e-9  # at most one image of the tiny split
    ops = {n.op_type for n in onnx.load(q.path).graph.node}
    assert ("QuantizeLinear" if mode == "static" else "ConvInteger") in ops
    images = np.random.default_rng(0).random((6, 3, 32, 32), dtype=np.float32)
    p8, p32 = onnx_probs(Path(q.path), images), onnx_probs(fp32, images)
    assert np.allclose(p8.sum(1), 1, atol=1e-5)  # softmax kept float
    assert np.abs(p8 - p32).max() < 0.15


@pytest.mark.slow
def test_gate_judges_the_model_that_ships(trained):
    cfg, prepared, result, run_dir = trained
    evaluation = evaluate_classifier(cfg, prepared, result, run_dir)
    shipped = Path(quantize_classifier(cfg, prepared, export_classifier(cfg, prepared, result, run_dir / "ship")).path)
    checkpoint = evaluation.metrics
    judged = shipped_evaluation(cfg, prepared, evaluation, shipped)
    metrics, on = judged.metrics, judged.measured_on
    assert on == "model.onnx as shipped (flip TTA, int8; onnxruntime)"
    assert metrics["loss"] == evaluate_on_split(cfg, prepared, shipped)["loss"] != checkpoint["loss"]
    assert json.loads(Path(judged.metrics_path).read_text()) == metrics and metrics["checkpoint"] == checkpoint
    report = evaluate_gate(Candidate(metrics, measured_on=on), ChampionEval(None), GateConfig(min={"accuracy": 0}))
    assert report.rules[0].measured == metrics["accuracy"] and report.rules[0].detail == on
    record = report.to_dict()  # the summary and the version's metadata say what was judged, and on what
    assert record["measured_on"] == on and record["metrics"]["accuracy"] == metrics["accuracy"]
    assert "per_class" not in record["metrics"]
    plain = cfg.model_copy(update={"export": cfg.export.model_copy(update={"tta": False, "quantize": "none"})})
    assert shipped_evaluation(plain, prepared, evaluation, shipped) is evaluation


def test_static_quantisation_needs_calibration_images(tmp_path):
    model = _lopsided()
    export_checked(model, torch.rand(2, 3, 8, 8), tmp_path / "m.onnx", 17, 1e-4)
    with pytest.raises(ValueError, match="calibration"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", "static")
    assert not (tmp_path / "q.onnx").exists()
    quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", "static", np.random.rand(8, 3, 8, 8).astype(np.float32))
    assert open_session(tmp_path / "q.onnx").get_outputs()[1].name == "probs"


def _input_scale(path: Path) -> float:
    """The int8 step of the first quantized activation (the flattened image)."""
    graph = onnx.load(str(path)).graph
    node = next(n for n in graph.node if n.op_type == "QuantizeLinear")
    [scale] = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.name == node.input[1]]
    return float(scale)


def test_calibration_method_sets_how_far_one_outlier_stretches_the_ranges(tmp_path):
    """minmax stretches the input's int8 range to one stray pixel; percentile (99.999th of |x|) drops it, so the
    other 196,607 values keep their resolution."""
    export_checked(_lopsided(), torch.rand(2, 3, 8, 8), tmp_path / "m.onnx", 17, 1e-4)
    images = np.random.default_rng(0).random((1024, 3, 8, 8), dtype=np.float32)
    images[0, 0, 0, 0] = 50.0
    scale = {m: _input_scale(quantize_onnx(tmp_path / "m.onnx", tmp_path / f"{m}.onnx", "static", images, m))
             for m in ("minmax", "percentile", "entropy")}  # fmt: skip
    assert scale["minmax"] == pytest.approx(50 / 255, rel=1e-3)
    assert scale["percentile"] == pytest.approx(1 / 255, rel=0.05)
    assert scale["entropy"] <= scale["minmax"]


@pytest.mark.parametrize("tta", [[], ["hflip", "vflip"]])
def test_first_conv_float_keeps_the_convolutions_reading_the_image_in_fp32(tmp_path, tta):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    export_checked(
        FlipTTA(net.eval(), tta) if tta else net.eval(), torch.rand(2, 3, 8, 8), tmp_path / "m.onnx", 17, 1e-4
    )
    images = np.random.default_rng(0).random((16, 3, 8, 8), dtype=np.float32)

    def float_convs(first_conv_float: bool) -> int:
        """Conv nodes whose weight is a plain initializer, not the output of a DequantizeLinear."""
        out = quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", "static", images, "minmax", first_conv_float)
        graph = onnx.load(str(out)).graph
        weights = {i.name for i in graph.initializer}
        return sum(n.op_type == "Conv" and n.input[1] in weights for n in graph.node)

    convs = sum(n.op_type == "Conv" for n in onnx.load(str(tmp_path / "m.onnx")).graph.node)
    assert float_convs(False) == 0
    assert float_convs(True) == convs // 2  # one image-reading conv per view, the second conv of each is int8
    assert open_session(tmp_path / "q.onnx").get_outputs()[1].name == "probs"


# --- through the retrain flow ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_retrain_with_every_technique_publishes_the_int8_model(tmp_path):
    over = tiny_overrides(tmp_path, **TECHNIQUES, **{"gate.max_quantized_drop": 0.5})
    summary = retrain("demo", over)
    assert summary["promoted"]
    [rule] = [r for r in summary["gate"]["rules"] if r["rule"].startswith("int8 accuracy drop")]
    assert rule["passed"] and rule["measured"] is not None
    registry = Registry(open_store(over["storage.uri"]))
    meta = registry.metadata("demo", summary["version"])
    quant = meta["export"]["quantization"]
    assert quant["published"] == "int8" and meta["onnx_sha256"] == quant["int8"]["sha256"] == meta["export"]["sha256"]
    assert meta["cost"]["model_mb"] == quant["int8"]["size_bytes"] / 1e6 < quant["fp32"]["size_bytes"] / 1e6
    assert meta["export"]["tta"] == ["hflip", "vflip"]
    # the version records the int8 TTA graph's metrics, the checkpoint's (plain and flipped) beside them
    metrics = json.loads(registry.fetch("demo", summary["version"], "metrics.json", tmp_path / "m.json").read_text())
    assert summary["metrics"]["accuracy"] == meta["metrics"]["accuracy"] == metrics["accuracy"]
    assert {"accuracy_tta", "macro_f1_tta"} <= set(metrics["checkpoint"])
    report = registry.fetch("demo", summary["version"], "report.md", tmp_path / "report.md").read_text()
    assert "| model.onnx as shipped |" in report and "| best checkpoint |" in report
