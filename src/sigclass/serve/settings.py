"""Service settings: dataclass defaults, then ``SIGCLASS_SERVE_*`` environment variables.

``sigclass serve`` writes its flags to the environment so that every uvicorn worker process
builds the same settings; tests build a :class:`Settings` and pass it to ``create_app``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import lru_cache

from ..choices import BACKENDS, PRECISIONS, choice_problem, raise_problems
from ..exceptions import ConfigError

ENV_PREFIX = "SIGCLASS_SERVE_"


@dataclass(frozen=True)
class Settings:
    """How the scoring service loads its model and guards its inputs.

    Attributes:
        model: A run folder, a model folder or ``models:/NAME@ALIAS``.
        backend: ``auto`` (ONNX Runtime on a CPU when it is faster, PyTorch on CUDA), ``torch``
            or ``onnx``.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``fp32``, or ``int8`` for the graph ``sigclass export --quantize int8`` made
            (on ONNX Runtime; refused if it failed its accuracy check).
        max_batch_size: Most requests run through the model together (1 turns batching off).
        max_wait_ms: Longest a request waits for others to join its batch.
        api_key: When set, scoring and metadata need it in the ``X-API-Key`` header.
        max_request_bytes: Larger request bodies get HTTP 413.
        max_image_pixels: Larger images are refused before they are decoded.
        max_batch_inputs: Most inputs in one ``/predict/batch`` request.
        onnx_path: Where the exported ONNX graph is kept (default: the sigclass cache folder).
        max_aspect_ratio: Images whose long side exceeds this many times the short one get 422.
        max_batch_pixels: Most image pixels (from the headers) in one request, all inputs
            together.
        max_concurrent_decodes: Most inputs decoded and preprocessed at once, all requests
            together (each decoded image can take hundreds of megabytes).
        max_explain_pixels: Larger images are scaled down to this many pixels before their map is
            computed (the map comes back at that size).
        max_pending_explanations: Most explanations queued or running; more get 503.
        request_timeout_s: Longest a request may wait for decoding, the model and its
            explanation; later it gets 504 (0: no limit).
        header_timeout_s: A connection that has not sent a complete request head in this time
            is closed (408).
        body_timeout_s: A request body not received in full within this time gets 408.
        keep_alive_s: An idle keep-alive connection is closed after this time.
        limit_concurrency: Most connections and requests at once; more get 503.
        max_number_chars: Longest number (characters) in a JSON signal.
        max_csv_cell_chars: Longest CSV cell (characters).
        drift_window: Recent inputs the drift statistic and the mean confidence of ``/metrics``
            are computed over.
        drift_threshold: The population stability index above which ``/metadata`` says the
            inputs have drifted (0.25: the usual rule of thumb for a significant shift).
        reject_unknown: Answer class ``null`` for inputs the model's out-of-distribution score
            calls unknown (refused at start for a model saved without OOD data).
    """

    model: str = ""
    backend: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    max_batch_size: int = 16
    max_wait_ms: float = 2.0
    api_key: str | None = None
    max_request_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_batch_inputs: int = 64
    onnx_path: str | None = None
    max_aspect_ratio: float = 20.0
    max_batch_pixels: int = 100_000_000
    max_concurrent_decodes: int = 2
    max_explain_pixels: int = 262_144
    max_pending_explanations: int = 4
    request_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    limit_concurrency: int = 256
    max_number_chars: int = 64
    max_csv_cell_chars: int = 256
    drift_window: int = 500
    drift_threshold: float = 0.25
    reject_unknown: bool = False

    def __post_init__(self):
        problems = [choice_problem("backend", self.backend, BACKENDS),
                    choice_problem("precision", self.precision, PRECISIONS)]
        for name in ("max_batch_size", "max_request_bytes", "max_image_pixels", "max_batch_inputs",
                     "max_batch_pixels", "max_concurrent_decodes", "max_explain_pixels",
                     "max_pending_explanations", "limit_concurrency", "max_number_chars",
                     "max_csv_cell_chars", "drift_window"):
            if getattr(self, name) < 1:
                problems.append(f"'{name}' must be at least 1. Got {getattr(self, name)!r}.")
        for name in ("max_wait_ms", "request_timeout_s"):
            if getattr(self, name) < 0:
                problems.append(f"'{name}' must be 0 or more. Got {getattr(self, name)!r}.")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "drift_threshold"):
            if getattr(self, name) <= 0:
                problems.append(f"'{name}' must be more than 0. Got {getattr(self, name)!r}.")
        if self.max_aspect_ratio < 1:
            problems.append(f"'max_aspect_ratio' must be at least 1. Got {self.max_aspect_ratio!r}.")
        raise_problems(problems)

    def upload_limits(self):
        """The :class:`~sigclass.modalities.base.UploadLimits` each input is decoded under."""
        from ..modalities.base import UploadLimits  # the modalities: when the service starts

        return UploadLimits(self.max_image_pixels, self.max_aspect_ratio, self.max_number_chars,
                            self.max_csv_cell_chars)

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables (``None`` values left out)."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name))
                for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_env(cls, environ=None) -> Settings:
        """Defaults overridden by ``SIGCLASS_SERVE_<NAME>`` variables (``SIGCLASS_API_KEY`` too)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            try:
                if kind.startswith("bool"):
                    values[f.name] = _flag(f.name, raw)
                elif kind.startswith("int"):
                    values[f.name] = int(raw)
                elif kind.startswith("float"):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                raise ConfigError(f"{ENV_PREFIX}{f.name.upper()} must be a number. Got {raw!r}.") from None
        if "api_key" not in values and environ.get("SIGCLASS_API_KEY"):
            values["api_key"] = environ["SIGCLASS_API_KEY"]
        return cls(**values)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings.from_env()


def _flag(name: str, raw: str) -> bool:
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be true or false. Got {raw!r}.")
