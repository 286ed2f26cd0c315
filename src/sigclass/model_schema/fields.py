"""Bounds, field types and the strict base of the ``model.json`` schema (:mod:`sigclass.model_schema`)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

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


def short(text, limit: int = 60) -> str:
    """``text`` on one line, cut to ``limit`` characters (for messages that quote input)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def describe_errors(exc: ValidationError, prefix: tuple = ()) -> list[str]:
    """One problem per field; the branches of a union a value failed are joined with "or"."""
    found: dict[str, list[str]] = {}
    shown: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        location = location_of((*prefix, *error["loc"]))
        message = re.sub(r"^Value error, ", "", re.sub(r"^Input should be ", "expected ", error["msg"]))
        if error["type"] == "missing":
            message = "missing"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        else:
            shown[location] = f", got {show(error.get('input'))}"
        found.setdefault(location, [])
        if message not in found[location]:
            found[location].append(message)
    return [f"field '{loc}': {messages[0]}"
            + "".join(" or " + re.sub(r"^expected ", "", m) for m in messages[1:])
            + shown.get(loc, "") for loc, messages in found.items()]


def location_of(loc: tuple) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            part = short(str(part))
            if UNION_TAG.fullmatch(part):
                continue  # the branch of a union pydantic tried, not a field
            text += f".{part}" if text else part
    return text or "(document)"


def show(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object of {len(value)} key(s)"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    return short(repr(value))
