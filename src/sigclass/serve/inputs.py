"""The inputs of a request: each one's name and raw bytes or parsed JSON, before the model's
modality decodes it (:meth:`~sigclass.modalities.base.Modality.decode_upload`).

Images are checked before they are decoded (:func:`sigclass.modalities.uploads.decode_image`:
a decompression bomb or an extreme aspect ratio is refused from its header, formats outside
the allow-list never reach a decoder); signals arrive in the layout of
:mod:`sigclass.data.signal_layout`: JSON arrays ``[channel][time]`` or CSV with one column per
channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import ServiceError


@dataclass
class Upload:
    """One input of a request: its name and raw bytes, or an already parsed JSON value."""

    name: str
    data: bytes | None = None
    value: Any = None


def parse_json(body: bytes, name: str = "body", max_number_chars: int = 64) -> Any:
    """The JSON value of ``body``. Numbers parse as floats; one longer than ``max_number_chars``
    (or NaN, Infinity) becomes a marker the modality names with its place
    (:class:`~sigclass.modalities.uploads.JsonNumber`)."""
    from ..modalities.uploads import JsonNumber

    hooks = JsonNumber(max_number_chars)
    try:
        return json.loads(body, parse_int=hooks.number, parse_float=hooks.number,
                          parse_constant=hooks.constant)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ServiceError(400, "invalid_json", f"The {name} is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ServiceError(400, "invalid_json", f"The {name} is nested too deeply.") from None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()
