"""Image datasets from a folder of class subfolders or a CSV manifest, checked file by file.

Every file is read once: its bytes give the content hash (for duplicate detection, the feature
cache and the dataset fingerprint) and are decoded in full, so unreadable, truncated and non-image
files are found before any training starts. All problems are reported together.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import sha256_bytes, sha256_json
from ..exceptions import ConfigError, DataError, Problem

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
BAD_FILE_POLICIES = ("error", "skip")
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


@dataclass
class ImageDataset:
    """A checked, labeled collection of image files.

    Build it with :meth:`from_folder` or :meth:`from_manifest`. ``skipped`` lists the files left out
    under ``on_bad_file="skip"`` and ``ignored`` the files that are not part of the data (hidden
    files, files outside class folders), each with its reason, so nothing is dropped silently.
    """

    items: list[ImageItem]
    classes: list[str]
    root: Path
    skipped: list[Problem] = field(default_factory=list)
    ignored: list[Problem] = field(default_factory=list)
    source: str = ""

    modality = "image"

    @classmethod
    def from_folder(
        cls, root: str | Path, on_bad_file: str = "error", min_per_class: int = 1
    ) -> ImageDataset:
        """Read ``root/<class>/**/<image>``; class names are the subfolder names.

        Args:
            root: Folder holding one subfolder per class.
            on_bad_file: ``"error"`` raises :class:`DataError` listing every bad file;
                ``"skip"`` leaves bad files out and lists them in ``skipped``.
            min_per_class: Fewest images a class needs (the split decides it).
        """
        _check_policy(on_bad_file)
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise DataError(Problem(str(root), "dataset folder does not exist or is not a folder"))
        problems: list[Problem] = []
        ignored: list[Problem] = []
        candidates: list[tuple[str, str]] = []
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for entry in sorted(root.iterdir()):
            if entry.is_file():
                ignored.append(Problem(_rel(entry, root), "file outside any class folder"))
            elif entry.name.startswith("."):
                ignored.append(Problem(_rel(entry, root), "hidden folder"))
        if not class_dirs:
            raise DataError(
                Problem(str(root), "no class subfolders found"),
                hint="Put the images of each class in a subfolder named after the class, "
                "or pass a CSV manifest with 'path,label' columns.",
            )
        empty_classes = []
        for class_dir in class_dirs:
            files = []
            for dirpath, dirnames, filenames in os.walk(class_dir):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    full = Path(dirpath) / name
                    if name.startswith("."):
                        ignored.append(Problem(_rel(full, root), "hidden file"))
                    else:
                        files.append(_rel(full, root))
            if not files:
                empty_classes.append(class_dir.name)
            candidates += [(key, class_dir.name) for key in files]
        class_problems = [
            Problem(f"{name}/", "empty class folder: it holds no files; add images or remove it")
            for name in empty_classes
        ]
        return cls._build(root, candidates, on_bad_file, min_per_class, problems, class_problems,
                          ignored, source=str(root))

    @classmethod
    def from_manifest(
        cls,
        manifest: str | Path,
        root: str | Path | None = None,
        on_bad_file: str = "error",
        min_per_class: int = 1,
    ) -> ImageDataset:
        """Read a CSV manifest with ``path`` and ``label`` columns.

        Args:
            manifest: CSV file; paths are relative to ``root`` (or absolute inside it).
            root: Dataset root; defaults to the manifest's folder. No path may escape it.
            on_bad_file: ``"error"`` or ``"skip"``, as in :meth:`from_folder`.
            min_per_class: Fewest images a class needs.
        """
        _check_policy(on_bad_file)
        manifest = Path(manifest).expanduser().resolve()
        if not manifest.is_file():
            raise DataError(Problem(str(manifest), "manifest file does not exist"))
        root = Path(root).expanduser().resolve() if root is not None else manifest.parent
        problems: list[Problem] = []
        candidates: list[tuple[str, str]] = []
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = {(f or "").strip().lower(): f for f in reader.fieldnames or []}
            if "path" not in fields or "label" not in fields:
                raise DataError(
                    Problem(str(manifest), f"manifest header must name the columns 'path' and "
                            f"'label'; found {reader.fieldnames}"),
                )
            for line, row in enumerate(reader, start=2):
                raw_path = (row.get(fields["path"]) or "").strip()
                label = (row.get(fields["label"]) or "").strip()
                where = f"{manifest.name} line {line}"
                if not raw_path:
                    problems.append(Problem(where, "empty path"))
                    continue
                if not label:
                    problems.append(Problem(raw_path, f"empty label ({where})"))
                    continue
                full = Path(raw_path) if Path(raw_path).is_absolute() else root / raw_path
                resolved = full.resolve()
                if not resolved.is_relative_to(root):
                    problems.append(Problem(
                        raw_path, f"path escapes the dataset root '{root}' ({where}); keep every "
                        "file under the root or pass a wider --root"))
                    continue
                candidates.append((resolved.relative_to(root).as_posix(), label))
        if not candidates and not problems:
            raise DataError(Problem(str(manifest), "manifest lists no images"))
        return cls._build(root, candidates, on_bad_file, min_per_class, problems, [], [],
                          source=str(manifest))

    @classmethod
    def _build(
        cls, root: Path, candidates: list[tuple[str, str]], on_bad_file: str, min_per_class: int,
        problems: list[Problem], class_problems: list[Problem], ignored: list[Problem], source: str,
    ) -> ImageDataset:
        checked = _check_files(root, candidates)
        items = []
        for (key, label), (digest, reason) in zip(candidates, checked, strict=True):
            if reason:
                problems.append(Problem(key, reason))
            else:
                items.append(ImageItem(key, root / key, label, digest))
        dup_problems, items = _find_duplicates(items)
        problems += dup_problems
        counts = defaultdict(int)
        for item in items:
            counts[item.label] += 1
        labels_seen = sorted({label for _, label in candidates})
        small = [
            Problem(f"{label}/", f"class too small for the split: {counts[label]} usable image(s), "
                    f"at least {min_per_class} needed; add images, merge or remove the class, or "
                    "lower --val-size/--test-size")
            for label in labels_seen if 0 < counts[label] < min_per_class
        ]
        if on_bad_file == "error" and (problems or class_problems):
            raise DataError(
                problems + class_problems + small,
                hint="Fix or remove these files, or pass --on-bad-file skip to leave bad files out "
                "(they are listed in the run report).",
            )
        if small:
            raise DataError(small + class_problems)
        classes = sorted(counts)
        if len(classes) < 2:
            raise DataError(
                Problem(source, f"need at least 2 classes with usable images, found {classes}")
            )
        skipped = problems + class_problems
        if skipped:
            warnings.warn(
                f"Skipped {len(skipped)} bad file(s) or folder(s) of {source}; see the dataset's "
                "'skipped' list and the run's data_report.json.",
                stacklevel=3,
            )
        return cls(items, classes, root, skipped, ignored, source)

    # -- the dataset protocol shared with signal datasets ---------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[str]:
        """Stable ids used by split files: paths relative to the root."""
        return [item.key for item in self.items]

    @property
    def labels(self) -> np.ndarray:
        return np.array([item.label for item in self.items], dtype=object)

    @property
    def y(self) -> np.ndarray:
        """Class indices into :attr:`classes`."""
        index = {name: i for i, name in enumerate(self.classes)}
        return np.array([index[item.label] for item in self.items], dtype=np.int64)

    @property
    def groups(self) -> None:
        return None

    @property
    def content_hashes(self) -> list[str]:
        return [item.sha256 for item in self.items]

    @property
    def paths(self) -> list[Path]:
        return [item.path for item in self.items]

    def model_inputs(self) -> list[Path]:
        """What a predictor takes for these items: the image files."""
        return self.paths

    def to_torch(self, data_config: dict[str, Any], augment=None, masks=None):
        """A torch dataset of (normalized tensor, class index), augmented when ``augment`` is given;
        ``masks`` (a folder mirroring the dataset) blanks areas that must not drive predictions."""
        from .transforms import ImageTensorDataset, build_image_transform

        transform = build_image_transform(data_config, augment)
        mask_files = fill = None
        if masks is not None:
            from ..explain.guided import mask_fill, mask_paths

            mask_files, fill = mask_paths(self, masks), mask_fill(data_config)
        return ImageTensorDataset(self.paths, self.y, transform, channels=int(data_config["input_size"][0]),
                                  masks=mask_files, fill=fill)

    def subset(self, indices) -> ImageDataset:
        """The images at ``indices``, keeping the full class list."""
        items = [self.items[i] for i in np.asarray(indices, dtype=np.int64)]
        return ImageDataset(items, self.classes, self.root, self.skipped, self.ignored, self.source)

    def fingerprint(self) -> str:
        """Hash of every (id, label, content hash): equal fingerprints mean equal data."""
        return sha256_json(sorted((i.key, i.label, i.sha256) for i in self.items))

    def report(self) -> dict[str, Any]:
        """Counts per class and every skipped or ignored file, for the run report."""
        counts = defaultdict(int)
        for item in self.items:
            counts[item.label] += 1
        return {
            "modality": self.modality,
            "source": self.source,
            "root": str(self.root),
            "n_items": len(self.items),
            "classes": self.classes,
            "class_counts": dict(counts),
            "fingerprint": self.fingerprint(),
            "skipped": [{"path": p.path, "reason": p.reason} for p in self.skipped],
            "ignored": [{"path": p.path, "reason": p.reason} for p in self.ignored],
        }


def _check_policy(on_bad_file: str) -> None:
    if on_bad_file not in BAD_FILE_POLICIES:
        raise ConfigError(
            f"The 'on_bad_file' option must be one of 'error', 'skip'. Got {on_bad_file!r}."
        )


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _check_files(root: Path, candidates: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(sha256, problem or "") for every candidate, decoding files on a few threads."""

    def check(key: str) -> tuple[str, str]:
        return check_image_file(root / key)

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        return list(pool.map(check, [key for key, _ in candidates]))


def check_image_file(path: Path) -> tuple[str, str]:
    """Read and fully decode one file. Returns ``(sha256, "")`` or ``("", reason)``."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        reason = "not an image file" if path.exists() else "file not found"
        if path.exists():
            reason += f" (extension '{path.suffix or '<none>'}'; accepted: jpg, png, bmp, tiff, webp)"
        return "", reason
    try:
        data = path.read_bytes()
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


def _find_duplicates(items: list[ImageItem]) -> tuple[list[Problem], list[ImageItem]]:
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
