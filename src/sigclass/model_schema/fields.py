"""Bounds, field types and the strict base of the ``model.json`` schema (:mod:`sigclass.model_schema`)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

FORMAT = "sigclass-model"
ENSEMBLE = "ensemble"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"

MAX_BYTES = 4 * 1024 * 1024  # a model.json is a few KB; class lists of 100k names still fit
MAX_DEPTH = 32  # the deepest real document nests 4 levels (info.head.best_params)
MAX_CLASSES = 100_000
MAX_SIDE = 8192  # pixels of an image input side
MAX_CHANNELS = 4096
MAX_TIMEPOINTS = 10_000_000
MAX_MEMBERS = 64
MAX_DRIFT_BINS = 10
FIX = "restore the model folder from its run or the model registry (the file was modified or damaged)"
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")

# Network options that could point the loader at a file, a folder or a URL.
PATH_KEY = re.compile(r"path|file|dir|url|uri|checkpoint|weight|pretrained|cache|hub|cfg|root|"
                      r"location|download|load", re.IGNORECASE)
RESERVED_KEYS = frozenset({"name", "n_classes", "in_chans", "modality"})
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# A string option is a short word (a render mode, a timm name such as resnet18.a1_in1k): no
# separator, no drive or scheme, no file suffix.
WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
FILE_SUFFIX = re.compile(r"\.(pth?|bin|ckpt|safetensors|onnx|npz|npy|json|pkl|pickle|h5|skops|"
                         r"ya?ml|txt|csv|zip|tar|gz|so|py)$", re.IGNORECASE)
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
# The names pydantic gives the branches of a union in an error's location.
UNION_TAG = re.compile(r"str|int|float|bool|none|(literal|list|dict|function-\w+|constrained-\w+)\[.*")

Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Word = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


