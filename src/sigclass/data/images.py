"""Image datasets from a folder of class subfolders or a CSV manifest, checked file by file.

Every file is read once: its bytes give the content hash (for duplicate detection, the feature
cache and the dataset fingerprint) and are decoded in full, so unreadable, truncated and non-image
files are found before any training starts. All problems are reported together.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import sha256_json
from ..choices import BAD_FILE_POLICIES, check_choice
from ..exceptions import ConfigError, DataError, Problem
from .additions import min_classes
from .file_checks import DEFAULT_MAX_FILE_MB, FileLimits, file_problem
from .image_augment import ImageTensorDataset
from .image_files import ImageItem, check_files, find_duplicates
from .image_masks import mask_fill, mask_paths
from .image_preprocess import build_image_transform
from .leakage import DEFAULT_THRESHOLDS, image_hashes
from .predefined import (
    PredefinedParts,
    apply_rules,
    canonical_split,
    collect_parts,
)


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
    predefined: PredefinedParts | None = None

    modality = "image"

    @classmethod
    def from_folder(
        cls, root: str | Path, on_bad_file: str = "error", min_per_class: int = 1, *,
        max_file_mb: float = DEFAULT_MAX_FILE_MB, follow_symlinks: bool = False,
    ) -> ImageDataset:
        """Read ``root/<class>/**/<image>``; class names are the subfolder names.

        A root whose subfolders are all split names (``train``, ``val``/``valid``/``validation``,
        ``test``, any case), each holding class folders, is a predefined split
        (:mod:`sigclass.data.predefined`): ids keep the split folder (``val/can/1.jpg``) and the
        dataset's ``predefined`` parts are kept by :func:`~sigclass.make_split`.

        Args:
            root: Folder holding one subfolder per class (or one per split).
            on_bad_file: ``"error"`` raises :class:`DataError` listing every bad file;
                ``"skip"`` leaves bad files out and lists them in ``skipped``.
            min_per_class: Fewest images a class needs (the split decides it).
            max_file_mb: Largest file read, in megabytes; larger files are bad files, refused
                from their size before they are opened.
            follow_symlinks: Read symbolic links whose target lies outside ``root`` (refused by
                default, like anything that is not a regular file: pipes, devices, sockets).
        """
        check_choice("on_bad_file", on_bad_file, BAD_FILE_POLICIES)
        limits = _limits(max_file_mb, follow_symlinks)
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise DataError(Problem(str(root), "dataset folder does not exist or is not a folder"))
        ignored: list[Problem] = []
        top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for entry in sorted(root.iterdir()):
            if entry.is_file():
                ignored.append(Problem(_rel(entry, root), "file outside any class folder"))
            elif entry.name.startswith("."):
                ignored.append(Problem(_rel(entry, root), "hidden folder"))
            elif not entry.is_dir():
                ignored.append(Problem(_rel(entry, root), "outside any class folder and not a "
                                       "regular file (a pipe, device, socket or broken link)"))
        if not top:
            raise DataError(
                Problem(str(root), "no class subfolders found"),
                hint="Put the images of each class in a subfolder named after the class, "
                "or pass a CSV manifest with 'path,label' columns.",
            )
        splits = {d.name: canonical_split(d.name) for d in top}
        if any(splits.values()):
            return cls._from_split_folders(root, top, splits, on_bad_file, min_per_class, ignored,
                                           limits)
        _check_not_nested(root, top)
        problems: list[Problem] = []
        candidates, class_problems = _class_folder_candidates(root, top, "", ignored, problems)
        return cls._build(root, candidates, on_bad_file, min_per_class, problems, class_problems,
                          ignored, source=str(root), limits=limits)

    @classmethod
    def _from_split_folders(cls, root: Path, top: list[Path], splits: dict[str, str | None],
                            on_bad_file: str, min_per_class: int, ignored: list[Problem],
                            limits: FileLimits) -> ImageDataset:
        others = [name for name, part in splits.items() if part is None]
        if others:
            named = ", ".join(f"{n}/" for n, p in splits.items() if p)
            raise DataError(Problem(str(root), f"mixes split folders ({named}) with other folders "
                                    f"({', '.join(n + '/' for n in others)}); put every class folder "
                                    "inside train/, val/ or test/, or use class folders only"))
        seen: dict[str, str] = {}
        for name, part in splits.items():
            if part in seen:
                raise DataError(Problem(str(root), f"has two folders for the {part} part: "
                                        f"{seen[part]}/ and {name}/; keep one"))
            seen[part] = name
        problems: list[Problem] = []
        candidates: list[tuple[str, str]] = []
        class_problems: list[Problem] = []
        part_of: dict[str, str] = {}
        for folder in top:
            for entry in sorted(folder.iterdir()):
                if entry.is_file() and not entry.name.startswith("."):
                    problems.append(Problem(_rel(entry, root), f"file directly in the split folder "
                                            f"{folder.name}/; put it in a class folder "
                                            f"({folder.name}/<class>/) or remove it"))
            classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not classes:
                raise DataError(Problem(f"{folder.name}/", "split folder holds no class folders; "
                                        f"put the images in {folder.name}/<class>/"))
            found, empty = _class_folder_candidates(root, classes, f"{folder.name}/", ignored, problems)
            candidates += found
            class_problems += empty
            part_of.update((key, splits[folder.name]) for key, _ in found)
        named, missing = collect_parts(candidates, part_of, {part: f"the folder {name}/"
                                                             for name, part in splits.items()})
        predefined = apply_rules(named, str(root))
        dataset = cls._build(root, candidates, on_bad_file, min_per_class, problems,
                             class_problems + missing, ignored, source=str(root), limits=limits)
        dataset.predefined = predefined.restricted_to(dataset.ids)
        return dataset

    @classmethod
    def from_manifest(
        cls,
        manifest: str | Path,
        root: str | Path | None = None,
        on_bad_file: str = "error",
        min_per_class: int = 1,
        *,
        max_file_mb: float = DEFAULT_MAX_FILE_MB,
        follow_symlinks: bool = False,
    ) -> ImageDataset:
        """Read a CSV manifest with ``path`` and ``label`` columns.

        Args:
            manifest: CSV file; paths are relative to ``root`` (or absolute inside it).
            root: Dataset root; defaults to the manifest's folder. No path may escape it.
            on_bad_file: ``"error"`` or ``"skip"``, as in :meth:`from_folder`.
            min_per_class: Fewest images a class needs.
            max_file_mb: Largest file read, in megabytes, as in :meth:`from_folder`.
            follow_symlinks: Read a listed symbolic link whose target lies outside ``root``
                (its path must still be inside ``root``).
        """
        check_choice("on_bad_file", on_bad_file, BAD_FILE_POLICIES)
        limits = _limits(max_file_mb, follow_symlinks)
        manifest = Path(manifest).expanduser().resolve()
        reason = file_problem(manifest, limits)
        if reason:
            raise DataError(Problem(str(manifest), "manifest file does not exist"
                                    if reason == "file not found" else f"manifest {reason}"))
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
            split_field = fields.get("split")
            parts: dict[str, str] = {}
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
                part = None
                if split_field is not None:
                    value = (row.get(split_field) or "").strip()
                    part = canonical_split(value)
                    if part is None:
                        problems.append(Problem(raw_path, f"split {value!r} is not one of 'train', "
                                                f"'val', 'test' ({where}); fix the value"))
                        continue
                full = Path(raw_path) if Path(raw_path).is_absolute() else root / raw_path
                key, link = _manifest_key(full, root, limits)
                if key is None:
                    problems.append(Problem(
                        raw_path, f"path escapes the dataset root '{root}' ({where}); keep every "
                        "file under the root or pass a wider --root"
                        + (" (it is a symbolic link to a file outside the root: --follow-symlinks "
                           "reads it)" if link else "")))
                    continue
                candidates.append((key, label))
                if part is not None:
                    parts[key] = part
        if not candidates and not problems:
            raise DataError(Problem(str(manifest), "manifest lists no images"))
        named, class_problems = collect_parts(
            [c for c in candidates if c[0] in parts], parts,
            {part: f"the rows with split={part} of {manifest.name}" for part in ("train", "val", "test")})
        dataset = cls._build(root, candidates, on_bad_file, min_per_class, problems, class_problems,
                             [], source=str(manifest), limits=limits)
        if named:
            dataset.predefined = apply_rules(named, str(manifest)).restricted_to(dataset.ids)
        return dataset

    @classmethod
    def _build(
        cls, root: Path, candidates: list[tuple[str, str]], on_bad_file: str, min_per_class: int,
        problems: list[Problem], class_problems: list[Problem], ignored: list[Problem], source: str,
        limits: FileLimits | None = None,
    ) -> ImageDataset:
        checked = check_files(root, candidates, limits)
        items = []
        for (key, label), (digest, reason) in zip(candidates, checked, strict=True):
            if reason:
                problems.append(Problem(key, reason))
            else:
                items.append(ImageItem(key, root / key, label, digest))
        dup_problems, items = find_duplicates(items)
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
        if len(classes) < min_classes():
            raise DataError(
                Problem(source, f"need at least {min_classes()} classes with usable images, found {classes}")
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
        transform = build_image_transform(data_config, augment)
        mask_files = fill = None
        if masks is not None:
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

    def similarity_vectors(self, method: str, threshold: float | None, features=None):
        """What :mod:`~sigclass.data.leakage` compares to find near-duplicates: ``(vectors,
        metric, radius)``; perceptual hashes of the files within ``threshold`` bits, or
        ``features`` (rows of pooled CNN features) above a cosine similarity."""
        limit = DEFAULT_THRESHOLDS[method] if threshold is None else float(threshold)
        if method == "features":
            if features is None:
                raise ConfigError("near_duplicates='features' needs the feature rows of the images.")
            return np.asarray(features, dtype=np.float64), "cosine", 1.0 - limit
        bits = image_hashes(self.paths, method)
        # Hamming in scikit-learn is the fraction of differing bits; half a bit keeps '<= limit' exact.
        return bits, "hamming", (limit + 0.5) / bits.shape[1]

    def similarity_method(self, method: str) -> str:
        """How near-duplicates were found, for the report: the ``near_duplicates`` method."""
        return method

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
            "predefined_split": None if self.predefined is None else self.predefined.to_dict(),
        }


def _class_folder_candidates(root: Path, class_dirs: list[Path], prefix: str, ignored: list[Problem],
                             problems: list[Problem]) -> tuple[list[tuple[str, str]], list[Problem]]:
    """(key, label) of every file under each class folder, and the empty class folders."""
    candidates, empty = [], []
    for class_dir in class_dirs:
        files = []
        for dirpath, dirnames, filenames in os.walk(class_dir):
            for name in dirnames:
                if not name.startswith(".") and os.path.islink(os.path.join(dirpath, name)):
                    ignored.append(Problem(_rel(Path(dirpath) / name, root), "symbolic link to a "
                                           "folder: not followed; put the images in the class folder"))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                full = Path(dirpath) / name
                if name.startswith("."):
                    ignored.append(Problem(_rel(full, root), "hidden file"))
                else:
                    files.append(_rel(full, root))
        if not files:
            empty.append(Problem(f"{prefix}{class_dir.name}/", "empty class folder: it holds no "
                                 "files; add images or remove it"))
        candidates += [(key, class_dir.name) for key in files]
    return candidates, empty


def _check_not_nested(root: Path, top: list[Path]) -> None:
    """Refuse two levels of folders that look like classes: taking the outer ones as classes
    would silently learn the wrong labels."""
    inner: list[set[str]] = []
    for folder in top:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        subdirs = {p.name for p in entries if p.is_dir()}
        if any(p.is_file() for p in entries) or len(subdirs) < 2:
            return
        inner.append(subdirs)
    if len(top) > 1 and any(names != inner[0] for names in inner[1:]):
        return
    tree = [f"{root.name}/"]
    for folder, names in list(zip(top, inner, strict=True))[:4]:
        shown = sorted(names)
        tree.append(f"  {folder.name}/  ->  " + ", ".join(f"{n}/" for n in shown[:5])
                    + (", ..." if len(shown) > 5 else ""))
    raise DataError(
        Problem(str(root), "holds two levels of folders and no images at the first level, so the "
                "class folders are not where sigclass looks:\n    " + "\n    ".join(tree)),
        hint=f"Either point sigclass at the level whose sub-folders are the classes (e.g. "
        f"{root / top[0].name}), or, if the outer folders are parts of a split, name them train/, "
        "val/ and test/ (a CSV manifest with path,label[,split] columns works too).")


def _limits(max_file_mb: float, follow_symlinks: bool) -> FileLimits:
    if not max_file_mb > 0:
        raise ConfigError(f"The 'max_file_mb' option must be a positive number of megabytes. "
                          f"Got {max_file_mb!r}.")
    return FileLimits(float(max_file_mb), bool(follow_symlinks))


def _manifest_key(full: Path, root: Path, limits: FileLimits) -> tuple[str | None, bool]:
    """The id of a manifest path (relative to the root, ``None`` when it escapes it) and
    whether it is a link inside the root to a file outside it, which escapes unless links are
    followed."""
    resolved = full.resolve()
    if resolved.is_relative_to(root):
        return resolved.relative_to(root).as_posix(), False
    lexical = Path(os.path.normpath(full))
    if not lexical.is_relative_to(root):
        return None, False
    if limits.follow_symlinks:
        return lexical.relative_to(root).as_posix(), True
    return None, True


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
