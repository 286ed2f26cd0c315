"""The inputs of a request: each one's name and raw bytes or parsed JSON, before the model's
modality decodes it (:meth:`~sigclass.modalities.base.Modality.decode_upload`).

Images are checked before they are decoded (:func:`sigclass.data.image_files.decode_upload`:
a decompression bomb is refused from its header); signals arrive in the layout of
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


def parse_json(body: bytes, name: str = "body") -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServiceError(400, "invalid_json", f"The {name} is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ServiceError(400, "invalid_json", f"The {name} is nested too deeply.") from None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()
