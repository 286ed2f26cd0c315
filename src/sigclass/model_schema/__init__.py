"""The schema of ``model.json``: every field typed and bounded, checked before anything is built.

:func:`read_document` reads the file within size and nesting bounds (before the JSON parser sees
it) and refuses duplicate keys and ``NaN``; :func:`check_document` validates a single model's or
an ensemble's description with pydantic (strict: no string is taken for a number) and then its
fields against each other: the classes against the network's outputs, the preprocessing
against the network's input channels, the files against the folder. Network options that could
name a file (``checkpoint_path``, ``weights``, a value such as ``/etc/passwd`` or ``x.pth``) are
refused: a model folder opens nothing outside itself.

Every problem found is reported in one :class:`~sigclass.exceptions.ArtifactError` of one line:
``'<folder>/model.json': field 'data_config.input_size[1]': expected ..., got 'a'; fix: ...``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
    ValidationError,
)

from ..choices import MODALITIES, MODES
from ..exceptions import ArtifactError
from .data_configs import (
    DATA_CONFIGS,  # the schema of each modality's data_config, used by sigclass.runtime too
    data_config_channels,
    data_config_problems,
)
from .fields import (
    ENSEMBLE,
    FILE_NAME,
    FILE_SUFFIX,
    FIX,
    FORMAT,
    FORMAT_VERSION,
    KEY,
    MAX_BYTES,
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_DEPTH,
    MAX_MEMBERS,
    MODEL_JSON,
    PATH_KEY,
    RESERVED_KEYS,
    WEIGHTS,
    WORD,
    Name,
    StrictModel,
    describe_errors,
    short,
    show,
)
from .trust import ConformalSpec, DriftReference, OODSpec


class NetworkSpec(StrictModel):
    """How to rebuild the network: a registry name and its options (no file, no URL)."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")]
    n_classes: int = Field(ge=0, le=MAX_CLASSES)
    in_chans: int | None = Field(default=None, ge=1, le=MAX_CHANNELS)
    modality: Literal[MODALITIES] | None = None  # type: ignore[valid-type]
    kwargs: dict[str, Any] = Field(default_factory=dict, max_length=64)


class HeadSpec(StrictModel):
    """The scikit-learn head of a headless model."""

    file: Annotated[str, StringConstraints(max_length=128)]
    type: Annotated[str, StringConstraints(max_length=1000)] = ""


class ModelDocument(StrictModel):
    """``model.json`` of a single model."""

    format: Literal[FORMAT]  # type: ignore[valid-type]
    format_version: int = Field(default=FORMAT_VERSION, ge=1)
    kind: Literal["model"] | None = None
    # what the model outputs: class probabilities, or boxes (sigclass.detector)
    task: Literal["classification", "detection"] = "classification"
    modality: Literal[MODALITIES]  # type: ignore[valid-type]
    mode: Literal[MODES]  # type: ignore[valid-type]
    classes: list[Name] = Field(min_length=1, max_length=MAX_CLASSES)
    data_config: dict[str, Any]
    network: NetworkSpec
    head: HeadSpec | None = None
    # temperature scaling of the logits (sigclass.evaluation.calibration); 1: none
    temperature: float = Field(default=1.0, ge=0.01, le=100, allow_inf_nan=False)
    # the test part's drift scores (sigclass.evaluation.drift); null in models saved before
    drift_reference: DriftReference | None = None
    # conformal prediction sets (sigclass.evaluation.conformal); None: a model saved without them
    conformal: ConformalSpec | None = None
    # out-of-distribution score and threshold (sigclass.evaluation.ood); None: saved without
    ood: OODSpec | None = None
    info: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]] = Field(
        min_length=1, max_length=16)
    saved_with: dict[str, Any] = Field(default_factory=dict)


class Member(StrictModel):
    """One member of an ensemble: its folder (``members/<name>``) and weight."""

    folder: Annotated[str, StringConstraints(max_length=200)]
    weight: float = Field(ge=0, le=1e6, allow_inf_nan=False)
    model: Annotated[str, StringConstraints(max_length=1000)] = ""
    mode: Literal[MODES] | None = None  # type: ignore[valid-type]


class EnsembleDocument(StrictModel):
    """``model.json`` of an ensemble (see :mod:`sigclass.ensemble`)."""

    format: Literal[FORMAT]  # type: ignore[valid-type]
    format_version: int = Field(default=FORMAT_VERSION, ge=1)
    kind: Literal["ensemble"]
    modality: Literal[MODALITIES]  # type: ignore[valid-type]
    classes: list[Name] = Field(min_length=2, max_length=MAX_CLASSES)
    members: list[Member] = Field(min_length=2, max_length=MAX_MEMBERS)
    info: dict[str, Any] = Field(default_factory=dict)


# -- reading ---------------------------------------------------------------------------------


def fail(where: Path | str, problems: list[str], fix: str = FIX) -> ArtifactError:
    """One error of one line naming the file, every problem and the fix."""
    text = "; ".join(" ".join(p.split()) for p in problems)
    # "'.../model.json': field 'x': ..." and "'.../model.json' is corrupted (...)"
    separator = ": " if problems[0].startswith("field ") else " "
    return ArtifactError(f"'{where}'{separator}{text}; fix: {fix}.")


def read_document(path: Path) -> dict[str, Any]:
    """The JSON object of ``path``, read within :data:`MAX_BYTES` and :data:`MAX_DEPTH`."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise fail(path, [f"cannot be read ({exc.strerror})"]) from None
    if len(raw) > MAX_BYTES:
        raise fail(path, [f"larger than {MAX_BYTES // (1024 * 1024)} MiB; a model description "
                          "is a few KB"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(path, [f"is corrupted (not UTF-8 text: {exc.reason} at byte {exc.start})"]) from None
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise fail(path, [f"is corrupted: JSON nested {depth} levels deep, more than {MAX_DEPTH}"])
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise fail(path, [f"is corrupted ({' '.join(str(exc).split())})"]) from None
    if not isinstance(document, dict):
        raise fail(path, [f"is not a sigclass model description (a JSON {type(document).__name__}, "
                          "not an object)"])
    return document


def nesting_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (strings left out), in linear time."""
    depth = deepest = 0
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    for match in re.finditer(r"[\[\]{}]", bare):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"the key(s) {repeated} appear more than once in one object")
    return dict(pairs)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


# -- validating ------------------------------------------------------------------------------


def check_document(folder: Path, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (the parsed ``model.json`` of ``folder``) validated; returns it.

    Raises:
        ArtifactError: Every problem found, in one line.
    """
    where = folder / MODEL_JSON
    if document.get("format") != FORMAT:
        raise fail(where, [f"is not a sigclass model description (field 'format' is "
                           f"{show(document.get('format'))}, expected '{FORMAT}')"],
                   "point sigclass at a model folder written by `sigclass train`")
    version = document.get("format_version", FORMAT_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise fail(where, [f"field 'format_version': {version} was written by a newer sigclass "
                           f"(this one reads format {FORMAT_VERSION})"], "upgrade sigclass to load it")
    if document.get("kind") == ENSEMBLE:
        schema: type[BaseModel] = EnsembleDocument
    else:
        schema = ModelDocument
    problems: list[str] = []
    try:
        parsed = schema.model_validate(document)
    except ValidationError as exc:
        problems += describe_errors(exc)
        parsed = None
    if isinstance(parsed, ModelDocument):
        problems += _model_problems(folder, parsed)
    elif isinstance(parsed, EnsembleDocument):
        problems += _ensemble_problems(folder, parsed)
    elif schema is ModelDocument:  # still report the parts that can be checked on their own
        if document.get("modality") in MODALITIES:
            problems += data_config_problems(document["modality"], document.get("data_config"))
        network = document.get("network")
        kwargs = network.get("kwargs") if isinstance(network, dict) else None
        if isinstance(kwargs, dict):
            problems += kwargs_problems(kwargs)
    if problems:
        raise fail(where, problems)
    return document


def _model_problems(folder: Path, doc: ModelDocument) -> list[str]:
    problems = _unique("classes", doc.classes)
    if doc.task == "classification" and len(doc.classes) < 2:
        problems.append(f"field 'classes': a classifier needs at least 2 classes, got "
                        f"{len(doc.classes)}")
    tasks = DATA_CONFIGS[doc.modality].tasks
    if doc.task not in tasks:
        problems.append(f"field 'task': a {doc.modality} model does '{doc.task}'; it can do "
                        f"{' or '.join(repr(t) for t in tasks)}")
    if doc.task == "detection" and doc.head is not None:
        problems.append("field 'head': a detection model is a network without a scikit-learn head")
    problems += data_config_problems(doc.modality, doc.data_config)
    problems += kwargs_problems(doc.network.kwargs)
    if doc.network.modality not in (None, doc.modality):
        problems.append(f"field 'network.modality': '{doc.network.modality}' differs from "
                        f"field 'modality' ('{doc.modality}')")
    if doc.mode == "headless":
        if doc.head is None:
            problems.append("field 'head': a headless model needs its scikit-learn head, got null")
        if doc.network.n_classes != 0:
            problems.append(f"field 'network.n_classes': a headless model's network outputs "
                            f"features (0), got {doc.network.n_classes}")
    else:
        if doc.head is not None:
            problems.append(f"field 'head': a {doc.mode} model has no scikit-learn head, got one")
        if doc.network.n_classes != len(doc.classes):
            problems.append(f"field 'classes': {len(doc.classes)} class(es) listed but "
                            f"'network.n_classes' is {doc.network.n_classes}")
    channels = data_config_channels(doc.modality, doc.data_config)
    if channels is not None and doc.network.in_chans not in (None, channels):
        problems.append(f"field 'network.in_chans': {doc.network.in_chans} differs from the "
                        f"{channels} input channel(s) of 'data_config'")
    for name in doc.files:
        problems += file_problems(folder, name, f"files['{short(name)}']")
    if WEIGHTS not in doc.files:
        problems.append(f"field 'files': '{WEIGHTS}' is not listed")
    if doc.head is not None:
        problems += file_problems(folder, doc.head.file, "head.file")
        if doc.head.file not in doc.files:
            problems.append(f"field 'head.file': '{short(doc.head.file)}' is not listed in "
                            "'files' (no checksum to verify it by)")
    if doc.ood is not None:
        problems += file_problems(folder, doc.ood.file, "ood.file")
        if doc.ood.file in (WEIGHTS, MODEL_JSON) or (doc.head and doc.ood.file == doc.head.file):
            problems.append(f"field 'ood.file': '{short(doc.ood.file)}' is another file of the "
                            "model; the reference tensors have a file of their own")
        elif doc.ood.file not in doc.files:
            problems.append(f"field 'ood.file': '{short(doc.ood.file)}' is not listed in "
                            "'files' (no checksum to verify it by)")
    return problems


def _ensemble_problems(folder: Path, doc: EnsembleDocument) -> list[str]:
    problems = _unique("classes", doc.classes)
    if sum(m.weight for m in doc.members) <= 0:
        problems.append("field 'members': the weights are all zero")
    folders = [m.folder for m in doc.members]
    for index, member in enumerate(doc.members):
        parts = Path(member.folder).parts
        if (len(parts) != 2 or parts[0] != "members" or not FILE_NAME.fullmatch(parts[1])
                or ".." in parts[1] or member.folder != "/".join(parts)):
            problems.append(f"field 'members[{index}].folder': names a member outside the model "
                            f"folder: {show(member.folder)}; expected 'members/<name>'")
        else:
            problems += file_problems(folder, member.folder, f"members[{index}].folder", is_dir=True)
    if len(set(folders)) != len(folders):
        problems.append("field 'members': a member folder is listed twice")
    return problems


def kwargs_problems(kwargs: dict[str, Any]) -> list[str]:
    """What is wrong with a network's options: keys or values that could name a file or URL,
    or values that are not small JSON scalars and lists."""
    problems = []
    for key, value in kwargs.items():
        field = f"network.kwargs.{short(key)}"
        if not KEY.fullmatch(key) or key in RESERVED_KEYS:
            problems.append(f"field '{field}': not a network option name")
        elif PATH_KEY.search(key):
            problems.append(f"field '{field}': an option that can name a file or URL is not "
                            "allowed in a model folder (the weights are in weights.safetensors)")
        else:
            problem = _value_problem(value, 0)
            if problem:
                problems.append(f"field '{field}': {problem}")
    return problems


def _value_problem(value: Any, depth: int) -> str | None:
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"expected a finite number, got {value}"
    if isinstance(value, str):
        if not WORD.fullmatch(value) or ".." in value or FILE_SUFFIX.search(value):
            return (f"{show(value)} looks like a path or URL; a network option is a number, a "
                    "flag or a short name")
        return None
    if isinstance(value, list) and depth < 2 and len(value) <= 64:
        return next((p for v in value if (p := _value_problem(v, depth + 1))), None)
    return f"expected a number, a flag, a short name or a short list of them, got {show(value)}"


def file_problems(folder: Path, name: str, field: str, is_dir: bool = False) -> list[str]:
    """What is wrong with a file (or folder) ``name`` of a model folder: an absolute path, a
    ``..``, a separator, or a link that leads out of the folder."""
    plain = name.replace("\\", "/")
    if is_dir:
        if plain.startswith("/") or ".." in plain.split("/") or re.match(r"^[A-Za-z]:", plain):
            return [f"field '{field}': {show(name)} is not inside the model folder"]
    elif not FILE_NAME.fullmatch(name) or name in (".", ".."):
        return [f"field '{field}': names a file outside the model folder: {show(name)}; "
                "expected a plain file name such as 'weights.safetensors'"]
    target = folder / name
    try:
        inside = target.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a link loop
        inside = False
    if not inside:
        return [f"field '{field}': {show(name)} is a link that leads outside the model folder"]
    return []


def _unique(field: str, values: list[str]) -> list[str]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    return [f"field '{field}': {[short(v) for v in repeated]} listed more than once"] if repeated else []
