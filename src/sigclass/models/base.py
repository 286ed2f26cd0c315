"""The backbone/head contract shared by sigclass's own networks (images and signals)."""

from __future__ import annotations

import torch
from torch import nn


class ClassifierNet(nn.Module):
    """Base of sigclass's own networks: a feature extractor, global pooling, a linear classifier.

    Subclasses build their layers, call :meth:`_init_head` and implement :meth:`forward_features`
    returning ``(B, C, *spatial)``. Pooling averages over every axis after the channel axis, so
    the same head serves 2D feature maps (images) and 1D ones (signals), and class activation maps
    are ``classifier.weight @ feature_map`` for every network.

    With ``global_pool="flatten"`` the head flattens the feature map instead (the lab-brief CNN);
    the network then needs a fixed input size and class activation maps fall back to Grad-CAM.

    ``clip_grad_norm`` is the gradient-norm clip that ``train.clip_grad_norm="auto"`` applies to
    the network (``None``: none).
    """

    clip_grad_norm: float | None = None

    def _init_head(
        self, n_features: int, n_classes: int, global_pool: str = "avg", drop_rate: float = 0.0,
        flat_size: int = 1,
    ) -> None:
        if global_pool not in ("avg", "flatten"):
            raise ValueError(f"global_pool must be 'avg' or 'flatten'. Got {global_pool!r}.")
        self.global_pool = global_pool
        self.feature_channels = n_features
        self.num_features = n_features * (flat_size if global_pool == "flatten" else 1)
        self.drop_rate = drop_rate
        self.head_drop = nn.Dropout(drop_rate)
        self.n_classes = n_classes
        self.fc = nn.Linear(self.num_features, n_classes) if n_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=tuple(range(2, x.ndim)))
        else:
            x = x.flatten(1)
            if x.shape[1] != self.num_features:
                raise ValueError(
                    f"This network flattens its feature map and needs the input size it was built "
                    f"for (feature width {self.num_features}, got {x.shape[1]}). Resize the input "
                    "or use a global-average-pool variant."
                )
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, n_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None and global_pool != self.global_pool:
            raise ValueError("Changing the pooling of a built network is not supported.")
        self.n_classes = n_classes
        self.fc = nn.Linear(self.num_features, n_classes) if n_classes > 0 else nn.Identity()
