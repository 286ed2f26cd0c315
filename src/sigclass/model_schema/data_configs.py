"""The ``data_config`` of a model (its preprocessing), one schema per modality: each schema names
its modality (:attr:`modality_name`, the name of the modality's lean part), checks its fields
against each other (:meth:`problems`), says how many input channels it feeds (:attr:`channels`)
and which tasks a model of its modality can have (:attr:`tasks`); :data:`DATA_CONFIGS` maps each
modality's name to its schema."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, StringConstraints, ValidationError, model_validator

from ..choices import LABEL_RULES, LENGTH_POLICIES, RESIZE_MODES, TTA_CHOICES
from ..data.signal_options import SignalConfig
from ..modalities.image_lean import LeanImage
from ..modalities.signal_lean import LeanSignal
from .fields import (
    INTERPOLATIONS,
    MAX_CHANNELS,
    MAX_SIDE,
    MAX_TIMEPOINTS,
    Finite,
    Positive,
    StrictModel,
    Word,
    describe_errors,
    short,
)

__all__ = ["DATA_CONFIGS", "ImageDataConfig", "ReaderOptions", "SignalDataConfig",
           "data_config_channels", "data_config_problems"]


class ImageDataConfig(StrictModel):
    """The preprocessing of an image model (see ``sigclass.data.image_preprocess``)."""

    modality_name: ClassVar[str] = LeanImage.name
    tasks: ClassVar[tuple[str, ...]] = ("classification", "detection")
    input_size: list[Annotated[int, Field(ge=1, le=MAX_SIDE)]] = Field(min_length=3, max_length=3)
    mean: list[Finite] = Field(min_length=1, max_length=3)
    std: list[Positive] = Field(min_length=1, max_length=3)
    interpolation: Literal[INTERPOLATIONS] = "bilinear"  # type: ignore[valid-type]
    resize: Literal[RESIZE_MODES] = "squash"  # type: ignore[valid-type]
    crop_pct: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False)
    tta: Literal[TTA_CHOICES] | bool | None = "none"  # type: ignore[valid-type]
    tta_hflip: bool | None = None  # model folders written before TTA groups
    far_resize: Literal[RESIZE_MODES] | None = None  # type: ignore[valid-type]
    far_aspect: float = Field(default=1.5, ge=1, le=1000, allow_inf_nan=False)

    @property
    def channels(self) -> int:
        return self.input_size[0]

    def problems(self) -> list[str]:
        """What is wrong between the fields: channels other than 1 or 3, mean/std lengths."""
        problems = []
        if self.channels not in (1, 3):
            problems.append(f"field 'data_config.input_size[0]': images are read with 1 or 3 "
                            f"channels, got {self.channels}")
        for key in ("mean", "std"):
            if len(getattr(self, key)) != self.channels:
                problems.append(f"field 'data_config.{key}': {len(getattr(self, key))} value(s) "
                                f"for {self.channels} channel(s)")
        return problems


class ReaderOptions(StrictModel):
    """How signal files are read (:class:`~sigclass.data.signal_options.SignalConfig`); an
    option added there is taken as a JSON scalar until it is typed here."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    window: int | None = Field(default=None, ge=1, le=MAX_TIMEPOINTS)
    stride: int | None = Field(default=None, ge=1, le=MAX_TIMEPOINTS)
    label_rule: Literal[LABEL_RULES] = "majority"  # type: ignore[valid-type]
    length_policy: Literal[LENGTH_POLICIES] = "error"  # type: ignore[valid-type]
    length: int | None = Field(default=None, ge=1, le=MAX_TIMEPOINTS)
    case_column: Word = "case_id"
    time_column: Word = "time"
    label_column: Word = "label"
    group_column: Word = "group"
    channels: list[Word] | None = Field(default=None, max_length=MAX_CHANNELS)
    resample: Annotated[str, StringConstraints(max_length=64)] | None = None
    max_gap: Annotated[str, StringConstraints(max_length=64)] | Finite | None = None

    @model_validator(mode="after")
    def _known_options(self) -> ReaderOptions:
        for key, value in (self.model_extra or {}).items():
            if key not in SignalConfig.__dataclass_fields__:
                raise ValueError(f"'{short(key)}' is not a reading option")
            if not (value is None or isinstance(value, bool | int | float | str)) or (
                    isinstance(value, str) and len(value) > 256):
                raise ValueError(f"option '{short(key)}' must be a short JSON scalar")
        return self


class SignalDataConfig(StrictModel):
    """The preprocessing of a signal model (see ``sigclass.data.signal_preprocess``)."""

    modality_name: ClassVar[str] = LeanSignal.name
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    modality: Literal[LeanSignal.name] = LeanSignal.name  # type: ignore[valid-type]
    n_channels: int = Field(ge=1, le=MAX_CHANNELS)
    n_timepoints: int = Field(ge=1, le=MAX_TIMEPOINTS)
    channel_names: list[Word] | None = Field(default=None, max_length=MAX_CHANNELS)
    mean: list[Finite] = Field(max_length=MAX_CHANNELS)
    std: list[Positive] = Field(max_length=MAX_CHANNELS)
    length_policy: Literal[LENGTH_POLICIES] = "error"  # type: ignore[valid-type]
    reader: ReaderOptions | None = None

    @property
    def channels(self) -> int:
        return self.n_channels

    def problems(self) -> list[str]:
        """What is wrong between the fields: per-channel lists of another length."""
        problems = []
        for key in ("mean", "std", "channel_names"):
            values = getattr(self, key)
            if values is not None and len(values) != self.n_channels:
                problems.append(f"field 'data_config.{key}': {len(values)} value(s) for "
                                f"{self.n_channels} channel(s)")
        return problems


#: The schema of each modality's ``data_config``, by the modality's name.
DATA_CONFIGS: dict[str, type[ImageDataConfig] | type[SignalDataConfig]] = {
    schema.modality_name: schema for schema in (ImageDataConfig, SignalDataConfig)}


def data_config_problems(modality: str, data_config: Any) -> list[str]:
    """Every problem of ``data_config`` as the preprocessing of a ``modality`` model."""
    if not isinstance(data_config, dict):
        return []  # the top-level schema named it already
    try:
        config = DATA_CONFIGS[modality].model_validate(data_config)
    except ValidationError as exc:
        return describe_errors(exc, ("data_config",))
    return config.problems()


def data_config_channels(modality: str, data_config: dict[str, Any]) -> int | None:
    """The input channels ``data_config`` feeds, or ``None`` when it does not say."""
    try:
        return DATA_CONFIGS[modality].model_validate(data_config).channels
    except ValidationError:
        return None
