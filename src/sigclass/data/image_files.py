"""Image files: which files count as images, and reading each one once to check it.

Every file's bytes give its content hash (for duplicate detection, the feature cache and the
dataset fingerprint) and are decoded in full, so unreadable, truncated and non-image files are
found before any training starts.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .._utils import sha256_bytes
from ..exceptions import DataError, Problem
from .file_checks import FileLimits, FileProblem, file_problem, read_checked

IMAGE_HINT = "upload a JPEG, PNG, BMP, TIFF or WebP image"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
#: Largest image accepted, in pixels (about 16k x 16k); larger files are reported, not decoded.
MAX_IMAGE_PIXELS = 268_435_456


@dataclass(frozen=True)
class ImageItem:
    """One labeled image file.

    Attributes:
        key: Path relative to the dataset root in POSIX form; the image's id in split files.
        path: Absolute path of the file.
        label: Class name.
        sha256: Hash of the file's bytes.
    """

    key: str
    path: Path
    label: str
    sha256: str



def check_files(root: Path, candidates: list[tuple[str, str]],
                limits: FileLimits | None = None) -> list[tuple[str, str]]:
    """(sha256, problem or "") for every candidate, decoding files on a few threads."""

    def check(key: str) -> tuple[str, str]:
        return check_image_file(root / key, limits, root)

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        return list(pool.map(check, [key for key, _ in candidates]))


def check_image_file(path: Path, limits: FileLimits | None = None,
                     root: Path | None = None) -> tuple[str, str]:
    """Read and fully decode one file. Returns ``(sha256, "")`` or ``("", reason)``.

    Only a regular file within ``limits`` (and, for links, inside ``root``) is opened; see
    :mod:`sigclass.data.file_checks`.
    """
    reason = file_problem(path, limits, root)
    if reason:
        return "", reason
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return "", (f"not an image file (extension '{path.suffix or '<none>'}'; accepted: jpg, "
                    "png, bmp, tiff, webp)")
    try:
        data = read_checked(path, limits, root)
    except FileProblem as exc:
        return "", exc.reason
    except FileNotFoundError:
        return "", "file not found"
    except OSError as exc:
        return "", f"unreadable file: {exc.strerror or exc}"
    if not data:
        return "", "empty file (0 bytes)"
    reason = image_decode_problem(data)
    return ("", reason) if reason else (sha256_bytes(data), "")


def image_decode_problem(data: bytes) -> str:
    """Why ``data`` cannot be used as an image, or ``""`` when it decodes completely."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                return (f"image too large ({width}x{height} pixels, limit {MAX_IMAGE_PIXELS:,}); "
                        "downscale it")
            image.load()
    except UnidentifiedImageError:
        return "not an image: the content cannot be decoded as JPEG, PNG, BMP, TIFF or WebP"
    except Image.DecompressionBombError as exc:
        return f"image too large (decompression bomb guard): {exc}"
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc)
        if "truncated" in text.lower() or "broken data stream" in text.lower():
            return f"truncated or corrupted image: {text}"
        return f"corrupted image: {text}"
    return ""


def find_duplicates(items: list[ImageItem]) -> tuple[list[Problem], list[ImageItem]]:
    """Report files with identical bytes; keep the first copy of a same-class group only."""
    by_hash: dict[str, list[ImageItem]] = defaultdict(list)
    for item in items:
        by_hash[item.sha256].append(item)
    problems, drop = [], set()
    for group in by_hash.values():
        if len(group) < 2:
            continue
        labels = sorted({item.label for item in group})
        first = group[0]
        if len(labels) > 1:
            for item in group:
                others = ", ".join(f"{o.key} ('{o.label}')" for o in group if o is not item)
                problems.append(Problem(item.key, f"exact duplicate across classes: same content as "
                                        f"{others}; contradicting labels, keep one copy in the right class"))
                drop.add(item.key)
        else:
            for item in group[1:]:
                problems.append(Problem(item.key, f"exact duplicate of {first.key} in class "
                                        f"'{item.label}': copies leak across the split; remove one"))
                drop.add(item.key)
    return problems, [item for item in items if item.key not in drop]


def expand_image_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Files as given; folders expanded to their image files (recursively, sorted).

    Entries of a folder that are not regular files (a named pipe, a link to a device) are kept
    when their name is an image's, so that the caller reports them instead of dropping them.
    """
    files: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files += sorted(str(p) for p in path.rglob("*")
                            if not p.is_dir() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif os.path.lexists(path):
            files.append(str(path))
        else:
            raise DataError(Problem(str(raw), "no such file or folder"))
    return files


def read_image_inputs(inputs: Iterable[str | Path],
                      limits: FileLimits | None = None) -> dict[str, Path | DataError]:
    """Image inputs for batch scoring: each file's path, or the :class:`DataError` saying why it
    is not read (not a regular file, over the size limit), so that it gets an error row."""
    out: dict[str, Path | DataError] = {}
    for name in expand_image_inputs(inputs):
        reason = file_problem(name, limits)
        out[name] = DataError(Problem(name, reason)) if reason else Path(name)
    return out
