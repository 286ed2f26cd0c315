"""Headless mode under its former module name, for code that imports from here.

The featurizer now lives in :mod:`sigclass.training.image_featurizer`, its cache in
:mod:`~sigclass.training.feature_cache`, the choice of test-time views in
:mod:`~sigclass.training.tta` and the heads in :mod:`~sigclass.training.heads`.
"""

from .._utils import default_cache_dir
from .feature_cache import FeatureCache
from .heads import AUTO_RIDGE_FEATURES, fit_head, make_head, resolve_head
from .image_featurizer import FEATURE_VERSION, Featurizer
from .tta import AUTO_TTA_GROUPS, TTA_MARGIN, TTA_SAMPLE, choose_tta, pick_tta_group

__all__ = ["AUTO_RIDGE_FEATURES", "AUTO_TTA_GROUPS", "FEATURE_VERSION", "TTA_MARGIN", "TTA_SAMPLE",
           "FeatureCache", "Featurizer", "choose_tta", "default_cache_dir", "fit_head", "make_head",
           "pick_tta_group", "resolve_head"]
