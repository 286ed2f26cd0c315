"""Strict decoding of service uploads: what an input may cost is checked before it is paid.

Images: only JPEG, PNG, BMP, TIFF and WebP reach a decoder (Pillow's other plugins, GIF, EPS
through Ghostscript, ICO, ..., never run on an upload); the pixel count and the aspect ratio are
read from the header; a file whose declared size its data cannot fill is refused. Signals: a
number must fit float32 and be spelled in a sane number of characters, a CSV cell is bounded.
"""

from __future__ import annotations

import io
import re

import numpy as np

from ..data.image_files import IMAGE_HINT
from ..exceptions import DataError, Problem
from .base import UploadLimits

#: The image formats the service decodes (Pillow's names), in the order they are tried.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Formats recognised by their first bytes only to say what they are, never decoded.
_OTHER_FORMATS = ((b"GIF8", "a GIF image"), (b"DDS ", "a DDS texture"), (b"%!PS", "PostScript (EPS)"),
                  (b"\xc5\xd0\xd3\xc6", "PostScript (EPS)"), (b"\x00\x00\x01\x00", "an ICO icon"),
                  (b"\x0a", "a PCX image"), (b"P1", "a PBM/PGM/PPM image"), (b"P2", "a PGM image"),
                  (b"P3", "a PPM image"), (b"P4", "a PBM image"), (b"P5", "a PGM image"),
                  (b"P6", "a PPM image"), (b"Image type", "an IM image"), (b"%PDF", "a PDF document"),
                  (b"8BPS", "a Photoshop document"), (b"\x00\x00\x00\x0cjP", "a JPEG 2000 image"))


def as_limits(limits: UploadLimits | int) -> UploadLimits:
    """``limits``, or the default limits with ``max_pixels`` when an int is given."""
    return UploadLimits(max_pixels=limits) if isinstance(limits, int) else limits


def decode_image(data: bytes | None, name: str, limits: UploadLimits):
    """A fully decoded PIL image of an upload, or a :class:`DataError` naming what is wrong."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise DataError(Problem(name, f"is empty; {IMAGE_HINT}"))
    try:  # reads the header only, with the allowed plugins only
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise DataError(Problem(name, f"is too large to decode safely ({exc}); the service takes "
                                f"at most {limits.max_pixels:,} pixels, downscale the image")) from None
    except UnidentifiedImageError:
        other = next((what for magic, what in _OTHER_FORMATS if data.startswith(magic)), None)
        if other:
            raise DataError(Problem(name, f"is {other}, a format the service does not decode; "
                                    f"{IMAGE_HINT}")) from None
        raise DataError(Problem(name, f"is not an image (it starts with {data[:8]!r}); "
                                f"{IMAGE_HINT}")) from None
    except Exception as exc:  # noqa: BLE001 - any header the decoder rejects
        raise DataError(_truncated(name, exc)) from None
    check_image_size(image.size, name, limits)
    problem = _declared_size_problem(image, data)
    if problem:
        raise DataError(Problem(name, f"is truncated or corrupted ({problem}); upload the complete "
                                "file"))
    try:
        image.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
        raise DataError(_truncated(name, exc)) from None
    return image


def _truncated(name: str, exc: Exception) -> Problem:
    return Problem(name, f"is truncated or corrupted ({exc}); upload the complete file")


def check_image_size(size: tuple[int, int], name: str, limits: UploadLimits) -> None:
    """Refuse an image without pixels, over the pixel limit or beyond the aspect-ratio limit."""
    width, height = size
    if width == 0 or height == 0:
        raise DataError(Problem(name, f"has no pixels ({width}x{height}); {IMAGE_HINT}"))
    if width * height > limits.max_pixels:
        raise DataError(Problem(name, f"is {width}x{height} pixels ({width * height:,}); the service "
                                f"takes at most {limits.max_pixels:,} pixels, downscale the image"))
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise DataError(Problem(name, f"is {width}x{height} pixels, an aspect ratio of {ratio:,.0f}:1; "
                                f"the service takes at most {limits.max_aspect_ratio:g}:1 (the "
                                "--max-aspect-ratio option), crop or pad the image"))


def _declared_size_problem(image, data: bytes) -> str | None:
    """Why the data cannot hold the pixels the header declares, or ``None``.

    Pillow pads a JPEG whose scan ends early with grey (libjpeg only warns), so a 1 kB file can
    declare 20 million pixels; a TIFF's strips can point past the end of the file.
    """
    width, height = image.size
    if image.format == "JPEG":
        if not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
            return "the JPEG data has no end-of-image marker"
        blocks = -(-width // 8) * -(-height // 8)
        if len(data) * 8 < blocks:  # even the shortest code takes a bit per 8x8 block
            return (f"{len(data):,} bytes cannot hold the {width}x{height} pixels the header "
                    "declares")
    if image.format == "TIFF":
        tags = getattr(image, "tag_v2", {})
        offsets = tags.get(273) or tags.get(324) or ()
        counts = tags.get(279) or tags.get(325) or ()
        for offset, count in zip(_as_tuple(offsets), _as_tuple(counts), strict=False):
            if offset + count > len(data):
                return f"a strip at byte {offset:,} of {count:,} bytes lies past the end of the file"
    return None


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, tuple | list) else (value,)


# -- signals -------------------------------------------------------------------------------------

def check_signal_values(array: np.ndarray, name: str) -> None:
    """Refuse values float32 cannot hold (the network would see infinities)."""
    with np.errstate(invalid="ignore"):
        over = np.abs(array) > FLOAT32_MAX
    if not over.any():
        return
    index = tuple(int(i) for i in np.argwhere(over)[0])
    where = (f"channel {index[0]}, time {index[1]}" if len(index) == 2 else f"time {index[0]}")
    raise DataError(Problem(name, f"holds {array[index]:.3g} at {where}, beyond what float32 "
                            f"holds (±{FLOAT32_MAX:.3g}); rescale the signal"))


def check_csv_cells(data: bytes, name: str, limits: UploadLimits) -> None:
    """Refuse a CSV cell longer than ``limits.max_csv_cell_chars``, naming its row and column."""
    longest = limits.max_csv_cell_chars
    found = re.search(rb"[^,;\t\r\n]{%d,}" % (longest + 1), data)
    if found is None:
        return
    start = found.start()
    row = data.count(b"\n", 0, start) + 1
    line_start = data.rfind(b"\n", 0, start) + 1
    column = data.count(b",", line_start, start) + 1
    raise DataError(Problem(name, f"has a cell of more than {longest:,} characters at row {row}, "
                            f"column {column}; send one number per cell"))


class JsonNumber:
    """How the service parses JSON numbers: bounded in length, as floats, constants refused.

    Use an instance as the ``parse_int``, ``parse_float`` and ``parse_constant`` hooks of
    :func:`json.loads`. A number longer than ``max_chars`` parses as a :class:`TooLong` marker
    (its place is named once the structure is walked), so a 5,000-digit integer never reaches
    Python's int conversion.
    """

    def __init__(self, max_chars: int = 64):
        self.max_chars = max_chars

    def number(self, text: str):
        return TooLong(text) if len(text) > self.max_chars else float(text)

    def constant(self, text: str):
        return TooLong(text)  # NaN, Infinity, -Infinity: not JSON numbers


class TooLong:
    """A JSON number the service refuses: too long, or a non-standard constant."""

    def __init__(self, text: str):
        self.text = text

    def reason(self, max_chars: int) -> str:
        if self.text in ("NaN", "Infinity", "-Infinity"):
            return (f"holds {self.text}, which is not a JSON number; send null for a missing value "
                    "and finite numbers only")
        return (f"holds a number of {len(self.text):,} characters ({self.text[:20]}...); numbers may "
                f"have at most {max_chars} characters (the --max-number-chars option)")


def find_bad_number(value, name: str, max_chars: int, depth: int = 0) -> Problem | None:
    """The first refused number inside a parsed JSON value, as a problem naming its place."""
    if isinstance(value, TooLong):
        return Problem(name, value.reason(max_chars))
    if isinstance(value, float) and abs(value) > FLOAT32_MAX:
        return Problem(name, f"holds {value:.3g}, beyond what float32 holds (±{FLOAT32_MAX:.3g}); "
                       "rescale the signal")
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, list | dict | TooLong | float):
                problem = find_bad_number(item, f"{name}[{index}]", max_chars, depth + 1)
                if problem:
                    return problem
    if isinstance(value, dict):
        for key, item in value.items():
            problem = find_bad_number(item, f"{name}.{key}", max_chars, depth + 1)
            if problem:
                return problem
    return None
