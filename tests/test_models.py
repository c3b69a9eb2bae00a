import subprocess
import sys

import pytest
import torch

from ml.config.training import ModelConfig
from ml.core.torchvision_shim import ensure_torchvision
from ml.training.models import build_model, pick_device


@pytest.mark.parametrize("in_chans", [1, 3])
def test_any_timm_model_with_channels_and_classes(in_chans):
    model = build_model(ModelConfig(name="resnet10t"), in_chans=in_chans, num_classes=5).eval()
    assert model(torch.rand(2, in_chans, 32, 32)).shape == (2, 5)
    assert model.mean.shape == (1, in_chans, 1, 1)


def test_auto_device_and_unavailable_device():
    assert pick_device("auto").type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no cuda device"):
            pick_device("cuda")


def test_torchvision_shim_is_a_no_op_once_torchvision_imports():
    # ml.training.models already imported torchvision (patched or not): a second call must change nothing
    assert ensure_torchvision() is False


def test_torchvision_shim_patches_only_when_the_extension_is_missing():
    code = (
        "from ml.core.torchvision_shim import ensure_torchvision; "
        "patched = ensure_torchvision(); import timm, torchvision; "
        "from torchvision.extension import _has_ops; print(patched, _has_ops())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    patched, has_ops = out[0] == "True", out[1] == "True"
    assert patched != has_ops  # patched exactly when the compiled ops are missing (CPU torch + CUDA torchvision)


@pytest.mark.parametrize("name", ["vf_cnn_small", "resnet20_cifar"])
def test_small_image_networks_are_timm_models(name):
    model = build_model(ModelConfig(name=name), in_chans=1, num_classes=10).eval()
    x = torch.rand(2, 1, 32, 32)
    assert model(x).shape == (2, 10)
    pooled = model.backbone.forward_head(model.backbone.forward_features(x), pre_logits=True)
    assert pooled.shape == (2, model.backbone.num_features)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model(ModelConfig(name=name, pretrained=True), in_chans=3, num_classes=10)
