import numpy as np
import pytest
import torch
from torch import nn

from ml.config.training import ModelConfig
from ml.export.onnx import ParityError, export_checked, open_session
from ml.training.models import build_model


def test_export_matches_torch_and_has_a_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet10t"), in_chans=3, num_classes=4).eval()
    batch = torch.rand(6, 3, 32, 32)
    result = export_checked(model, batch, tmp_path / "model.onnx", opset=17, tolerance=1e-4)
    assert result.max_abs_diff <= 1e-4 and len(result.sha256) == 64
    session = open_session(tmp_path / "model.onnx")
    for n in (1, 5):  # exported with a batch of 1, served with any batch
        logits, probs, embedding = session.run(None, {"image": np.random.rand(n, 3, 32, 32).astype(np.float32)})
        assert logits.shape == (n, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
        assert embedding.shape == (n, model.backbone.num_features)  # pooled features, for drift monitoring


class _BranchOnData(nn.Module):
    """A data-dependent branch: tracing freezes the branch of the export sample, so ORT disagrees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled if x.sum() > 0 else -pooled


def test_parity_failure_fails_the_export_and_leaves_no_file(tmp_path):
    batch = torch.cat([torch.rand(1, 3, 8, 8), -torch.rand(3, 3, 8, 8)])
    with pytest.raises(ParityError, match="differs from torch"), pytest.warns(torch.jit.TracerWarning):
        export_checked(_BranchOnData(), batch, tmp_path / "model.onnx", opset=17, tolerance=1e-4)
    assert not (tmp_path / "model.onnx").exists()
