"""sigclass: images or IoT sensor signals to an evaluated, explained, deployed classifier.

The public API is imported lazily, so ``import sigclass`` stays fast and loads neither PyTorch nor
any model until one is used::

    import sigclass as sc

    data = sc.ImageDataset.from_folder("photos/")
    split = sc.make_split(data, seed=0)
    run = sc.train(data, split, mode="headless", out="runs/headless")
    predictor = sc.load("runs/headless")
    predictor.predict(["photos/can/can_1.jpg"])
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ImageDataset": "sigclass.data.images",
    "SignalDataset": "sigclass.data.signal_dataset",
    "load_signals": "sigclass.data.signals",
    "SignalConfig": "sigclass.data.signal_options",
    "SignalAugmentConfig": "sigclass.data.signal_augment",
    "make_split": "sigclass.data.split",
    "Split": "sigclass.data.split",
    "AugmentConfig": "sigclass.data.image_augment",
    "load_image": "sigclass.data.image_preprocess",
    "create_model": "sigclass.models",
    "list_models": "sigclass.models",
    "register_model": "sigclass.models",
    "Predictor": "sigclass.predictor",
    "RunConfig": "sigclass.config",
    "TrainConfig": "sigclass.config",
    "Featurizer": "sigclass.training.image_featurizer",
    "Trainer": "sigclass.training.trainer",
    "train": "sigclass.workflows.train",
    "update": "sigclass.workflows.update",
    "evaluate": "sigclass.evaluation",
    "load_dataset": "sigclass.workflows.prepare",
    "load": "sigclass.loading",
    "explain": "sigclass.explain",
    "Explanation": "sigclass.explain",
    "render_overlay": "sigclass.explain",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sigclass' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
