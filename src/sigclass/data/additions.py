"""Reading data that adds to a trained model rather than training one on its own.

A dataset trained on needs two classes at least; the items of ``sigclass update`` may hold one
(a new class, or more examples of an old one), since they join the model's own training data.
Readers ask :func:`min_classes`; :func:`allow_single_class` lowers it while additions are read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_MIN_CLASSES: ContextVar[int] = ContextVar("sigclass_min_classes", default=2)


def min_classes() -> int:
    """The fewest classes a dataset being read needs (2, or 1 while additions are read)."""
    return _MIN_CLASSES.get()


@contextlib.contextmanager
def allow_single_class() -> Iterator[None]:
    """Read datasets of a single class inside this block (additions to a trained model)."""
    token = _MIN_CLASSES.set(1)
    try:
        yield
    finally:
        _MIN_CLASSES.reset(token)
