"""The 1D networks follow the registry's backbone/head contract; the featurizers (MiniRocket,
signal-as-image) are registry networks whose state round-trips without pickle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sigclass as sc
from sigclass.exceptions import ConfigError, WeightsNotFoundError
from sigclass.inference import TorchEngine, make_engine

SIGNAL_MODELS = sc.list_models(modality="signal")
FEATURIZERS = ["minirocket", "multirocket_hydra", "catch22", "signal_image"]
NETWORKS = [name for name in SIGNAL_MODELS if name not in FEATURIZERS]


def test_registry_lists_the_signal_networks():
    assert set(SIGNAL_MODELS) == {"fcn", "resnet1d", "inception", "inception_time", "simple_cnn1d",
                                  "lstm", "gru", "bilstm", "lstm_fcn", "minirocket", "multirocket_hydra",
                                  "catch22", "signal_image"}
    assert not set(SIGNAL_MODELS) & set(sc.list_models(modality="image"))


@pytest.mark.parametrize("name", NETWORKS)
def test_contract(name):
    torch.manual_seed(0)
    small = {"width": 8, "depth": 2} if name != "inception_time" else {"width": 4, "depth": 3}
    model = sc.create_model(name, n_classes=3, in_chans=4, n_timepoints=40, **small)
    x = torch.randn(2, 4, 40)
    features = model.forward_features(x)
    assert features.ndim == 3 and features.shape[:2] == (2, model.feature_channels)
    assert features.shape[2] >= 40 // 4  # a time axis for class activation maps
    pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    logits = model(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    logits.sum().backward()
    without_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without_grad == []
    assert model.get_classifier().out_features == 3
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    assert model.model_spec == {"name": name, "n_classes": 3, "in_chans": 4, "modality": "signal",
                                "kwargs": {"n_timepoints": 40, **small}}


@pytest.mark.parametrize("name", ["fcn", "resnet1d", "inception", "lstm", "gru", "bilstm", "lstm_fcn"])
def test_full_length_feature_maps_and_any_input_length(name):
    model = sc.create_model(name, n_classes=2, in_chans=1, n_timepoints=50, width=8).eval()
    assert model.forward_features(torch.randn(1, 1, 50)).shape[-1] == 50
    assert model(torch.randn(3, 1, 77)).shape == (3, 2)


def test_width_and_depth_change_the_network():
    def size(**kwargs) -> int:
        model = sc.create_model("fcn", n_classes=2, in_chans=1, **kwargs)
        return sum(p.numel() for p in model.parameters())

    assert size(width=16) < size(width=32) and size(depth=2) < size(depth=4)
    assert sc.create_model("inception_time", n_classes=2, in_chans=1, width=4).num_features == 5 * 16
    with pytest.raises(ValueError, match=r"fcn: the 'width' option must be a positive integer. Got 0."):
        sc.create_model("fcn", n_classes=2, width=0)


def test_lab_brief_cnn_with_a_flatten_head_needs_its_length():
    model = sc.create_model("simple_cnn1d", n_classes=2, in_chans=2, n_timepoints=30, global_pool="flatten")
    assert model(torch.randn(2, 2, 30)).shape == (2, 2)
    assert model.num_features == 64 * 8
    with pytest.raises(ValueError, match="needs the input size it was built for"):
        model(torch.randn(2, 2, 50))


def test_no_pretrained_1d_networks():
    with pytest.raises(WeightsNotFoundError, match=r"^'fcn' is trained from scratch: there are no "
                       r"pretrained 1D networks"):
        sc.create_model("fcn", n_classes=2, pretrained=True)


# -- featurizers ------------------------------------------------------------------------------


def test_minirocket_state_round_trips_and_never_goes_to_onnx():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3, 30)).astype(np.float32)
    model = sc.create_model("minirocket", n_classes=0, in_chans=3, n_timepoints=30, n_kernels=168)
    with pytest.raises(ConfigError, match="not fitted"):
        model(torch.from_numpy(X))
    model.fit(X)
    features = model(torch.from_numpy(X))
    assert features.shape == (12, model.num_features) and model.num_features == 168
    assert torch.isfinite(features).all()
    state = model.state_dict()
    assert set(state) == {"n_channels_per_combination", "channel_indices", "dilations",
                          "n_features_per_dilation", "biases"}
    rebuilt = sc.create_model("minirocket", n_classes=0, in_chans=3, **model.model_spec["kwargs"])
    rebuilt.load_state_dict(state)
    torch.testing.assert_close(rebuilt(torch.from_numpy(X)), features)
    assert isinstance(make_engine(rebuilt, (3, 30), "auto", "cpu"), TorchEngine)
    with pytest.raises(ConfigError, match=r"'minirocket' cannot be exported to ONNX"):
        make_engine(rebuilt, (3, 30), "onnx", "cpu")


def test_featurizers_refuse_to_be_classifiers():
    with pytest.raises(ConfigError, match=r"^'minirocket' is a featurizer for headless mode"):
        sc.create_model("minirocket", n_classes=3)
    with pytest.raises(ConfigError, match="at least 9 timepoints"):
        sc.create_model("minirocket", n_classes=0, n_timepoints=5)


@pytest.mark.parametrize("render", ["gaf", "spectrogram"])
def test_signal_as_image(render):
    model = sc.create_model("signal_image", n_classes=0, in_chans=2, n_timepoints=40, render=render,
                            image_size=32).eval()
    x = torch.randn(3, 2, 40)
    images = model.images(x)
    assert images.shape == (6, 3, 32, 32)
    assert images.min() >= -1 - 1e-5 and images.max() <= 1 + 1e-5
    with torch.inference_mode():
        features = model(x)
    assert features.shape == (3, model.num_features) and model.num_features == 2 * 1280
    assert torch.isfinite(features).all()
    assert not any(p.requires_grad for p in model.parameters())  # a frozen backbone


def test_gramian_field_of_a_known_series():
    from sigclass.models.signal_features import gramian_images

    series = torch.tensor([[0.0, 1.0, 2.0]])  # rescaled to -1, 0, 1: angles pi, pi/2, 0
    gasf, gadf, distance = gramian_images(series, 3)[0]
    torch.testing.assert_close(gasf, torch.cos(torch.tensor([[2.0, 1.5, 1.0], [1.5, 1.0, 0.5],
                                                             [1.0, 0.5, 0.0]]) * torch.pi),
                               atol=1e-5, rtol=0)
    assert torch.allclose(gadf, -gadf.T, atol=1e-6) and distance[0, 2] == 1.0
