"""The model registry and its backbone/head contract, and the offline pretrained weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sigclass as sc
from sigclass.exceptions import ModelNotFoundError, WeightsNotFoundError

IMAGE_FEATURIZERS = ["hog_lbp"]  # hand-crafted features for headless mode, no classifier
IMAGE_MODELS = [name for name in sc.list_models(modality="image") if name not in IMAGE_FEATURIZERS]


def test_registry_lists_the_image_networks():
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "simple_cnn",
            "simple_cnn_gap", "vgg_like_1", "vgg_like_2", "vgg_like_3"} <= set(IMAGE_MODELS)
    assert sc.list_models("efficientnet*") == ["efficientnet_lite0", "efficientnet_lite1",
                                               "efficientnet_lite2"]
    assert set(sc.list_models(pretrained=True, modality="image")) == {
        "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_contract(name):
    torch.manual_seed(0)
    model = sc.create_model(name, n_classes=5, input_size=64) if name.startswith(("simple", "vgg")) \
        else sc.create_model(name, n_classes=5)
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.ndim == 4 and features.shape[0] == 2
    pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    without_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without_grad == []
    assert model.get_classifier().out_features == 5
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    assert model.model_spec["name"] == name


def test_gap_networks_accept_any_input_size():
    model = sc.create_model("simple_cnn_gap", n_classes=2).eval()
    assert model(torch.randn(1, 3, 50, 70)).shape == (1, 2)
    flat = sc.create_model("simple_cnn", n_classes=2, input_size=32).eval()
    with pytest.raises(ValueError, match="needs the input size it was built for"):
        flat(torch.randn(1, 3, 48, 48))


def test_unknown_name_lists_close_matches():
    with pytest.raises(ModelNotFoundError) as caught:
        sc.create_model("efficientnet_lite", n_classes=2)
    message = str(caught.value)
    assert message.startswith("Unknown model 'efficientnet_lite'. Close matches: efficientnet_lite")
    assert "efficientnet_lite0" in message.split(".")[1]


def test_missing_pretrained_weights_say_how_to_supply_them():
    with pytest.raises(WeightsNotFoundError) as caught:
        sc.create_model("resnet18", n_classes=2, pretrained=True)
    message = str(caught.value)
    assert "Pretrained weights for 'resnet18' are not available offline" in message
    assert "--weights PATH" in message and "never falls back to random weights" in message
    with pytest.raises(WeightsNotFoundError, match="has no pretrained weights"):
        sc.create_model("simple_cnn_gap", n_classes=2, pretrained=True)


def test_any_timm_name_with_local_weights_file(tmp_path):
    from safetensors.torch import save_file

    source = sc.create_model("resnet18", n_classes=10)
    save_file(source.state_dict(), str(tmp_path / "r18.safetensors"))
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    for path in ("r18.safetensors", "r18.pth"):
        model = sc.create_model("resnet18", n_classes=4, weights=tmp_path / path)
        assert torch.equal(model.conv1.weight, source.conv1.weight)
        assert model.get_classifier().out_features == 4  # other width: left freshly initialised
    with pytest.raises(Exception, match="do not fit"):
        sc.create_model("resnet34", n_classes=4, weights=tmp_path / "r18.safetensors")


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_pretrained_efficientnet_lite_recognises_photos(variant):
    from skimage import data

    from sigclass.data.image_preprocess import ImagePreprocessor, image_data_config

    model = sc.create_model(f"efficientnet_lite{variant}", n_classes=1000, pretrained=True).eval()
    config = image_data_config(model, resize="squash")
    batch = ImagePreprocessor(config)([data.chelsea(), data.coffee()])
    with torch.no_grad():
        top = model(batch).softmax(-1).topk(3).indices.numpy()
    cats = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert top[0, 0] in cats, top[0]
    assert top[1, 0] in {967, 968}, top[1]  # espresso, cup
    assert np.isin(top[0], list(cats)).sum() >= 2
