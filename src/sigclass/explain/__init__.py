"""Explanations: class activation maps for image and signal predictors, pictures and reports.

``explain(predictor, inputs)`` returns one :class:`Explanation` per input (a map over the
original input, the explained class, the probabilities, the method); ``render_overlay`` draws it.
``sigclass.explain(predictor, inputs)`` works as well: this module is callable, because the
package attribute ``sigclass.explain`` is this module once any part of it has been imported.
"""

import sys
import types

from .cam import Explanation, normalize_map
from .engine import explain
from .render import render_overlay

__all__ = ["Explanation", "explain", "normalize_map", "render_overlay"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return explain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
