"""The fixed choices of sigclass's options, declared once.

The run configuration validates against these tuples, the command line offers them as
``choices`` and the service checks its settings with them, so a new choice is added here and
nowhere else. :func:`choice_problem` words the message every one of them gives.
"""

from __future__ import annotations

from typing import Any

from .exceptions import ConfigError

MODALITIES = ("image", "signal")  # the registry of sigclass.modalities holds one of each
DEFAULT_MODALITY = "image"  # of a network or predictor that does not say: timm networks take images
MODES = ("headless", "finetune", "scratch")
HEADS = ("auto", "logreg", "linear_svm", "rbf_svm", "random_forest", "hist_gb", "ridge")
BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = ("fp32", "int8")  # int8: the graph of `sigclass export --quantize int8`
RESIZE_MODES = ("center_crop", "squash", "letterbox")
TTA_GROUPS = ("none", "hflip", "flips", "dihedral")  # the views of each: sigclass.data.views
TTA_CHOICES = (*TTA_GROUPS, "auto")
POOLINGS = ("auto", "final", "stages")
BAD_FILE_POLICIES = ("error", "skip")
NEAR_DUPLICATES = ("phash", "dhash", "off")
NEAR_DUPLICATE_METHODS = ("phash", "dhash", "features", "off")  # from Python: pooled CNN features
LEAK_POLICIES = ("error", "warn", "ignore")
MONITORS = ("auto", "val_loss", "val_accuracy", "val_f1")
LABEL_RULES = ("majority", "last", "center")
LENGTH_POLICIES = ("error", "pad", "truncate")
PARTS = ("train", "val", "test")
CAM_METHODS = ("auto", "cam", "gradcam", "layercam")
OOD_METHODS = ("knn", "mahalanobis", "off")  # the scores of sigclass.evaluation.ood


def choice_problem(name: str, value: Any, choices: tuple) -> str | None:
    """The message for ``value`` outside ``choices``, or ``None`` when it is one of them."""
    if value in choices:
        return None
    options = ", ".join(f"'{c}'" for c in choices)
    return f"The '{name}' option must be one of {options}. Got {value!r}."


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise :class:`ConfigError` when ``value`` is not one of ``choices``."""
    problem = choice_problem(name, value, choices)
    if problem:
        raise ConfigError(problem)


def raise_problems(problems: list[str | None]) -> None:
    """Raise one :class:`ConfigError` holding every problem found (``None`` entries are none)."""
    found = [p for p in problems if p]
    if found:
        raise ConfigError(" ".join(found))
