"""Service settings: dataclass defaults, then ``SIGCLASS_SERVE_*`` environment variables.

``sigclass serve`` writes its flags to the environment so that every uvicorn worker process
builds the same settings; tests build a :class:`Settings` and pass it to ``create_app``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import lru_cache

from ..choices import BACKENDS, choice_problem, raise_problems
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
        max_batch_size: Most requests run through the model together (1 turns batching off).
        max_wait_ms: Longest a request waits for others to join its batch.
        api_key: When set, scoring and metadata need it in the ``X-API-Key`` header.
        max_request_bytes: Larger request bodies get HTTP 413.
        max_image_pixels: Larger images are refused before they are decoded.
        max_batch_inputs: Most inputs in one ``/predict/batch`` request.
        onnx_path: Where the exported ONNX graph is kept (default: the sigclass cache folder).
    """

    model: str = ""
    backend: str = "auto"
    device: str = "auto"
    max_batch_size: int = 16
    max_wait_ms: float = 2.0
    api_key: str | None = None
    max_request_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_batch_inputs: int = 64
    onnx_path: str | None = None

    def __post_init__(self):
        problems = [choice_problem("backend", self.backend, BACKENDS)]
        for name in ("max_batch_size", "max_request_bytes", "max_image_pixels", "max_batch_inputs"):
            if getattr(self, name) < 1:
                problems.append(f"'{name}' must be at least 1. Got {getattr(self, name)!r}.")
        if self.max_wait_ms < 0:
            problems.append(f"'max_wait_ms' must be 0 or more. Got {self.max_wait_ms!r}.")
        raise_problems(problems)

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
                if kind.startswith("int"):
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
