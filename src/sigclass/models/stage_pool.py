"""A featurizer that pools several stages of a backbone, not only its last feature map.

Frozen ImageNet features of the last map are made for objects; inspection images (a crack in a
solar cell) carry their evidence in finer, earlier stages. :class:`StagePooled` concatenates the
mean and the maximum over the positions of the last ``n_stages`` stage maps and of the final
map (timm's ``forward_intermediates``). Measured with EfficientNet-Lite2 and a logistic head on
ELPV's demo split: 75.0 % accuracy from the final map's mean, 78.4 % from the pooled stages
(``bench/bench_featurizer.py``).

It keeps the backbone/head contract: ``forward_features`` returns the final map (the one class
activation maps use) and ``forward_head`` returns the pooled vector, whose slice
``final_mean_slice`` is the final map's mean, so a linear head's weights on that slice map onto
the final map, and Layer-CAM differentiates the whole vector.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

FEATURE_POOLS = ("final", "stages")
DEFAULT_STAGES = 3


def supports_stages(backbone) -> bool:
    """Whether ``backbone`` can give its stage maps (timm ``forward_intermediates``)."""
    return callable(getattr(backbone, "forward_intermediates", None)) and hasattr(backbone, "feature_info")


class StagePooled(nn.Module):
    """Mean and max of the last ``n_stages`` stage maps and of the final map, concatenated.

    Args:
        backbone: A timm network without classifier (``num_classes=0``).
        n_stages: Stages before the final map to pool.

    Attributes:
        num_features: Width of the pooled vector.
        final_mean_slice: ``(start, stop)`` of the final map's mean in the vector.
    """

    def __init__(self, backbone: nn.Module, n_stages: int = DEFAULT_STAGES):
        super().__init__()
        self.backbone = backbone
        self.n_stages = int(n_stages)
        info = backbone.feature_info
        channels = info.channels() if callable(getattr(info, "channels", None)) else [d["num_chs"] for d in info]
        channels = [int(c) for c in channels[-self.n_stages:]]
        final = int(backbone.num_features)
        self.num_features = 2 * (sum(channels) + final)
        start = 2 * sum(channels)
        self.final_mean_slice = (start, start + final)
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})
        self.default_cfg = self.pretrained_cfg
        self._stages = threading.local()  # stage maps of the current forward_features call

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        final, stages = self.backbone.forward_intermediates(x, indices=self.n_stages)
        self._stages.maps = stages
        return final

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        stages = getattr(self._stages, "maps", None)
        if stages is None:
            raise RuntimeError("StagePooled.forward_head pools the stages of the forward_features "
                               "call before it; call the network on images instead.")
        self._stages.maps = None
        parts = []
        for feature_map in [*stages, x]:
            axes = tuple(range(2, feature_map.ndim))
            parts.append(feature_map.mean(axes))
            parts.append(feature_map.amax(axes))
        # order: stage means and maxes first, the final map's mean and max last
        return torch.cat(parts[:-2] + [parts[-2], parts[-1]], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return nn.Identity()

    def reset_classifier(self, n_classes: int, global_pool: str | None = None) -> None:
        if n_classes:
            raise ValueError("A stage-pooling featurizer has no classifier; use feature_pool='final' "
                             "for a network to fine-tune.")

    @property
    def feature_info(self):
        return self.backbone.feature_info

    stage_prefix = "backbone."  # module names of the stages (Layer-CAM) are the backbone's
