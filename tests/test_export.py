"""``export_onnx``: every output keeps the batch axis, and a network torch.export cannot export is
written by the TorchScript exporter instead."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sigclass.inference import OnnxEngine, export_onnx


class TwoOutputs(nn.Module):
    """Logits and the feature map, as a bundle's graph has them."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        feature_map = torch.relu(self.conv(x))
        return self.fc(feature_map.mean(dim=(2, 3))), feature_map


class Unexportable(nn.Module):
    """A forward that refuses torch.export (as code it cannot follow would)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        if torch.compiler.is_compiling():
            raise RuntimeError("this forward cannot be exported")
        return self.fc(x)


@pytest.mark.parametrize("batch", [1, 5])
def test_every_output_keeps_the_batch_axis(tmp_path, batch):
    network = TwoOutputs().eval()
    graph = export_onnx(network, (3, 8, 8), tmp_path / "two.onnx")
    x = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = [t.numpy() for t in network(x)]
    engine = OnnxEngine(graph)
    assert [o.name for o in engine.session.get_outputs()] == ["output", "output_1"]
    got = engine.session.run(None, {engine.input_name: x.numpy()})
    for out, want in zip(got, expected, strict=True):
        assert out.shape == want.shape
        np.testing.assert_allclose(out, want, atol=1e-5, rtol=1e-4)


def test_a_network_torch_export_cannot_follow_is_exported_by_the_tracer(tmp_path, caplog):
    network = Unexportable().eval()
    with caplog.at_level("INFO", logger="sigclass.inference"):
        graph = export_onnx(network, (6,), tmp_path / "unexportable.onnx")
    assert "torch.export's ONNX exporter failed" in caplog.text
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = network(x).numpy()
    np.testing.assert_allclose(OnnxEngine(graph)(x.numpy()), expected, atol=1e-5, rtol=1e-4)
