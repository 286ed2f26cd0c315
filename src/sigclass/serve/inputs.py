"""Request bodies to model inputs, refusing bad ones with an error that names the problem.

Images are checked before they are decoded: the header gives the size, and an image over the
pixel limit (a decompression bomb: a few kilobytes that would expand to gigabytes) is refused
without allocating it. Signals arrive as JSON arrays ``[channel][time]`` (or ``[time]`` for one
channel) or as CSV with one column per channel and one row per time point.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import DataError, Problem
from .errors import ServiceError

IMAGE_HINT = "upload a JPEG, PNG, BMP, TIFF or WebP image"


@dataclass
class Upload:
    """One input of a request: its name and raw bytes, or an already parsed JSON value."""

    name: str
    data: bytes | None = None
    value: Any = None


def decode_image(upload: Upload, max_pixels: int):
    """A fully decoded PIL image of ``upload``, or a :class:`DataError` naming what is wrong."""
    from PIL import Image, UnidentifiedImageError

    name = upload.name
    if not upload.data:
        raise DataError(Problem(name, f"is empty; {IMAGE_HINT}"))
    try:
        image = Image.open(io.BytesIO(upload.data))  # reads the header only
    except Image.DecompressionBombError as exc:
        raise DataError(Problem(name, f"is too large to decode safely ({exc}); the service takes "
                                f"at most {max_pixels:,} pixels, downscale the image")) from None
    except UnidentifiedImageError:
        start = upload.data[:8]
        raise DataError(Problem(name, f"is not an image (it starts with {start!r}); {IMAGE_HINT}")) from None
    except Exception as exc:  # noqa: BLE001 - any header the decoder rejects
        raise DataError(Problem(name, f"is truncated or corrupted ({exc}); upload the complete "
                                "file")) from None
    width, height = image.size
    if width * height > max_pixels:
        raise DataError(Problem(name, f"is {width}x{height} pixels ({width * height:,}); the service "
                                f"takes at most {max_pixels:,} pixels, downscale the image"))
    if width == 0 or height == 0:
        raise DataError(Problem(name, f"has no pixels ({width}x{height}); {IMAGE_HINT}"))
    try:
        image.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
        raise DataError(Problem(name, f"is truncated or corrupted ({exc}); upload the complete "
                                "file")) from None
    return image


def signal_from_value(value: Any, name: str) -> np.ndarray:
    """A ``(C, T)`` or ``(T,)`` float array from a JSON value (``null`` counts as missing)."""
    if isinstance(value, dict):
        value = value.get("signal", value.get("data"))
    if not isinstance(value, list) or not value:
        raise DataError(Problem(name, "must be a non-empty JSON array of numbers [time] or of "
                                "arrays [channel][time]"))
    nested = [isinstance(v, list) for v in value]
    if any(nested) and not all(nested):
        raise DataError(Problem(name, "mixes numbers and arrays; send [channel][time] arrays"))
    rows = value if all(nested) else [value]
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise DataError(Problem(name, f"has channels of different lengths {sorted(lengths)}; every "
                                "channel needs one value per time point"))
    flat = [v for row in rows for v in row]
    bad = next((v for v in flat if v is not None and (isinstance(v, bool)
                                                     or not isinstance(v, int | float))), None)
    if bad is not None:
        raise DataError(Problem(name, f"holds a non-number value {bad!r}; send numbers only"))
    array = np.array([[math.nan if v is None else float(v) for v in row] for row in rows],
                     dtype=np.float64)
    return array if all(nested) else array[0]


def signal_from_csv(data: bytes | None, name: str, channel_names: list[str] | None) -> np.ndarray:
    """A ``(C, T)`` array from CSV text: one column per channel, an optional header row."""
    if not data:
        raise DataError(Problem(name, "is empty; send CSV with one column per channel"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(Problem(name, "is not UTF-8 text; send CSV with one column per channel")) from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    except csv.Error as exc:  # a cell over the csv module's size limit, a NUL byte, ...
        raise DataError(Problem(name, f"is not valid CSV ({exc}); send one column per channel")) from None
    if not rows:
        raise DataError(Problem(name, "holds no rows; send CSV with one column per channel"))
    header = None
    if not _numeric(rows[0]):
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
    if not rows:
        raise DataError(Problem(name, "has a header but no values"))
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise DataError(Problem(name, f"has rows with different numbers of columns {sorted(widths)}"))
    try:
        array = np.array([[_number(cell) for cell in row] for row in rows], dtype=np.float64).T
    except ValueError as exc:
        raise DataError(Problem(name, f"{exc}; send numbers only (empty cells count as missing)")) from None
    if header and channel_names and set(channel_names) <= set(header):
        array = array[[header.index(c) for c in channel_names]]
    return array


def _numeric(row: list[str]) -> bool:
    try:
        [_number(cell) for cell in row]
    except ValueError:
        return False
    return True


def _number(cell: str) -> float:
    cell = cell.strip()
    if cell == "" or cell.lower() in ("nan", "na", "null"):
        return math.nan
    try:
        return float(cell)
    except ValueError:
        raise ValueError(f"holds the non-number value {cell[:40]!r}") from None


def parse_json(body: bytes, name: str = "body") -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServiceError(400, "invalid_json", f"The {name} is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ServiceError(400, "invalid_json", f"The {name} is nested too deeply.") from None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()
