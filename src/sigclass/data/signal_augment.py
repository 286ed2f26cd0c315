"""Signal tensors for training, with optional training-only augmentation.

Augmentation acts on standardized ``(C, T)`` tensors, one case at a time: Gaussian jitter,
per-channel scaling, a circular time shift, and a random window crop stretched back to the full
length. It is off by default; evaluation and prediction never augment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class SignalAugmentConfig:
    """Training-only signal augmentation.

    Attributes:
        enabled: Turn augmentation on or off as a whole (off by default).
        jitter: Standard deviation of added Gaussian noise, in standardized units (0 disables).
        scaling: Standard deviation of a per-channel factor around 1 (0 disables).
        time_shift: Largest circular shift as a fraction of the length (0 disables).
        crop: Smallest fraction of the length kept by a random window crop that is then
            stretched back to the full length (1.0 disables).
        p: Probability that each enabled transform is applied to a case.
    """

    enabled: bool = False
    jitter: float = 0.03
    scaling: float = 0.1
    time_shift: float = 0.1
    crop: float = 0.9
    p: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def augment_signal(x, config: SignalAugmentConfig, generator=None):
    """One augmented copy of the ``(C, T)`` tensor ``x`` (``x`` itself is not modified)."""
    import torch

    def chance() -> bool:
        return bool(torch.rand((), generator=generator) < config.p)

    n_channels, n_timepoints = x.shape
    if config.crop < 1.0 and chance():
        keep = int(round(n_timepoints * (config.crop + (1 - config.crop) * float(torch.rand((), generator=generator)))))
        keep = max(2, min(n_timepoints, keep))
        start = int(torch.randint(0, n_timepoints - keep + 1, (), generator=generator))
        window = x[None, :, start:start + keep]
        x = torch.nn.functional.interpolate(window, size=n_timepoints, mode="linear",
                                            align_corners=True)[0]
    if config.time_shift > 0 and chance():
        largest = max(1, int(n_timepoints * config.time_shift))
        x = torch.roll(x, int(torch.randint(-largest, largest + 1, (), generator=generator)), dims=-1)
    if config.scaling > 0 and chance():
        x = x * (1 + config.scaling * torch.randn(n_channels, 1, generator=generator))
    if config.jitter > 0 and chance():
        x = x + config.jitter * torch.randn(x.shape, generator=generator)
    return x


class SignalTensorDataset:
    """A ``torch.utils.data.Dataset`` of ``(float tensor (C, T), class index)`` pairs.

    Args:
        X: Standardized cases, ``(n_cases, n_channels, n_timepoints)``.
        targets: Class indices (``None`` for unlabeled data: targets are -1).
        augment: Training augmentation, or ``None``.
    """

    def __init__(self, X: np.ndarray, targets: np.ndarray | None,
                 augment: SignalAugmentConfig | None = None):
        import torch

        self.tensors = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        self.targets = (np.full(len(X), -1, dtype=np.int64) if targets is None
                        else np.asarray(targets, dtype=np.int64))
        self.augment = augment if augment is not None and augment.enabled else None

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, index: int):
        x = self.tensors[index]
        if self.augment is not None:
            x = augment_signal(x, self.augment)
        return x, int(self.targets[index])
