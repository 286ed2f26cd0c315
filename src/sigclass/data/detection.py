"""Object-detection datasets: images with labeled boxes, checked image by image.

:meth:`DetectionDataset.load` reads a Pascal VOC folder (``Annotations/*.xml`` + ``JPEGImages/``,
with ``ImageSets/Main/{train,val,test}.txt`` as a predefined split), a COCO ``instances*.json``
with its image folder, or a CSV manifest ``path,xmin,ymin,xmax,ymax,label``
(:mod:`sigclass.data.detection_readers`). Every image is decoded once. All problems are reported
together, each naming its file: a box with zero or negative area, an empty or unknown label, an
annotation whose image is missing, an image no annotation names, an unreadable image. A box that
crosses the image border is clipped to it and counted (``clipped``), not refused.

``on_bad_file="error"`` raises one :class:`~sigclass.exceptions.DataError` listing every problem;
``"skip"`` leaves each image with a problem out and lists it in ``skipped``, as for classification.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..choices import BAD_FILE_POLICIES, check_choice
from ..exceptions import DataError, Problem
from .detection_readers import (
    Annotations,
    detect_layout,
    read_box_csv,
    read_coco,
    read_voc,
    unlisted_images,
)
from .file_checks import DEFAULT_MAX_FILE_MB, FileLimits
from .image_files import check_image_file

__all__ = ["DetectionDataset", "DetectionItem", "detect_layout"]


@dataclass(frozen=True)
class DetectionItem:
    """One image and its boxes.

    Attributes:
        key: Image path relative to the dataset root (POSIX); the image's id.
        path: Absolute path of the image.
        boxes: ``(n, 4)`` float array of ``xmin, ymin, xmax, ymax`` in pixels, clipped to the image.
        labels: The class name of each box.
        width: Image width in pixels.
        height: Image height in pixels.
    """

    key: str
    path: Path
    boxes: np.ndarray
    labels: tuple[str, ...]
    width: int
    height: int


@dataclass
class DetectionDataset:
    """A checked collection of images with labeled boxes.

    Attributes:
        items: The usable images.
        classes: Class names, sorted (COCO: the declared categories).
        root: The dataset root.
        parts: Predefined split, image key -> ``train``/``val``/``test`` (empty: none).
        skipped: Problems of the images left out under ``on_bad_file="skip"``.
        clipped: Boxes that crossed the image border and were clipped to it, by annotation place.
        layout: ``voc``, ``coco`` or ``csv``.
    """

    items: list[DetectionItem]
    classes: list[str]
    root: Path
    parts: dict[str, str] = field(default_factory=dict)
    skipped: list[Problem] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)
    layout: str = ""

    modality = "image"
    task = "detection"

    @classmethod
    def load(cls, source: str | Path, on_bad_file: str = "error", classes: list[str] | None = None,
             *, max_file_mb: float = DEFAULT_MAX_FILE_MB, follow_symlinks: bool = False,
             ) -> DetectionDataset:
        """Read a VOC folder, a COCO JSON (or its folder) or a box CSV manifest.

        Args:
            source: The dataset.
            on_bad_file: ``"error"`` raises :class:`DataError` listing every problem; ``"skip"``
                leaves out each image with a problem and lists it in ``skipped``.
            classes: The classes a label must be one of (a trained model's, for evaluation);
                ``None``: every label found is a class.
            max_file_mb: Largest file read, in megabytes.
            follow_symlinks: Read links whose target lies outside the dataset root.
        """
        check_choice("on_bad_file", on_bad_file, BAD_FILE_POLICIES)
        limits = FileLimits(max_file_mb, follow_symlinks)
        path = Path(source).expanduser().resolve()
        if not path.exists():
            raise DataError(Problem(str(path), "dataset does not exist"))
        layout = detect_layout(path)
        readers = {"voc": read_voc, "coco": read_coco, "csv": read_box_csv}
        if layout is None:
            raise DataError(Problem(str(path), "not a detection dataset"), hint=(
                "Expected a Pascal VOC folder (Annotations/*.xml and JPEGImages/), a COCO "
                "instances*.json with its images, or a CSV with the header "
                "path,xmin,ymin,xmax,ymax,label."))
        annotations = readers[layout](path, limits)
        return cls._build(annotations, on_bad_file, classes, limits, layout)

    @classmethod
    def _build(cls, found: Annotations, on_bad_file: str, classes: list[str] | None,
               limits: FileLimits, layout: str) -> DetectionDataset:
        problems = list(found.problems)  # problems of whole files, or of no single image
        bad: dict[str, list[Problem]] = {}
        known = set(classes) if classes is not None else None
        if layout != "csv" and found.image_folder != found.root or layout == "voc":
            for key in unlisted_images(found):
                problems.append(Problem(key, "image without annotation; annotate it (an image "
                                        "without objects needs an annotation with none) or remove it"))
        seen: dict[str, str] = {}
        for record in found.images:
            if record.key in seen:
                problems.append(Problem(record.source, f"annotates {record.key} again (also "
                                        f"{seen[record.key]}); merge the two"))
                continue
            seen[record.key] = record.source
            for box in record.boxes:
                if not box.label:
                    bad.setdefault(record.key, []).append(Problem(box.where, "empty label"))
                elif known is not None and box.label not in known:
                    bad.setdefault(record.key, []).append(Problem(
                        box.where, f"unknown label '{box.label}'; the classes are {sorted(known)}"))
        checked = _check_images(found, [r for r in found.images if seen.get(r.key) == r.source],
                                limits)
        items, clipped = [], []
        for record, (reason, size) in checked:
            if reason:
                place = record.key if "not found" not in reason else record.source
                text = reason if place == record.key else f"its image {record.key}: {reason}"
                bad.setdefault(record.key, []).insert(0, Problem(place, text))
                continue
            item, box_problems, crossed = _item(found.root, record, size)
            clipped += crossed
            if box_problems:
                bad.setdefault(record.key, []).extend(box_problems)
            elif record.key not in bad:
                items.append(item)
        problems += [p for key in sorted(bad) for p in bad[key]]
        if problems and on_bad_file == "error":
            raise DataError(problems, hint="Fix these annotations or files, or pass --on-bad-file "
                            "skip to leave the images concerned out (they are listed in the run "
                            "report).")
        if problems:
            warnings.warn(f"Skipped {len(bad)} image(s) of {found.root} with problems "
                          f"({len(problems)} problem(s)); see the dataset's 'skipped' list.",
                          stacklevel=3)
        names = classes or found.classes or sorted({lab for it in items for lab in it.labels})
        if not items:
            raise DataError(Problem(str(found.root), "no usable annotated image found"))
        if not names:
            raise DataError(Problem(str(found.root), "no labeled box found; a detector needs boxes"))
        usable = {item.key for item in items}
        parts = {k: v for k, v in found.parts.items() if k in usable}
        return cls(items, list(names), found.root, parts, problems, clipped, layout)

    # -- the dataset protocol ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[str]:
        return [item.key for item in self.items]

    def n_boxes(self) -> dict[str, int]:
        """Boxes per class."""
        counts = dict.fromkeys(self.classes, 0)
        for item in self.items:
            for label in item.labels:
                counts[label] = counts.get(label, 0) + 1
        return counts

    def subset(self, indices) -> DetectionDataset:
        items = [self.items[i] for i in np.asarray(indices, dtype=np.int64)]
        keys = {item.key for item in items}
        parts = {k: v for k, v in self.parts.items() if k in keys}
        return DetectionDataset(items, self.classes, self.root, parts, self.skipped, self.clipped,
                                self.layout)

    def split(self, val_size: float = 0.15, test_size: float = 0.2, seed: int = 0
              ) -> dict[str, np.ndarray]:
        """Indices of ``train``, ``val`` and ``test``: the predefined split when the data has one
        (an image of no listed part goes to train), otherwise a seeded random split by image."""
        if self.parts:
            names = [self.parts.get(item.key, "train") for item in self.items]
            split = {p: np.array([i for i, n in enumerate(names) if n == p], dtype=np.int64)
                     for p in ("train", "val", "test")}
            if len(split["val"]) == 0:  # VOC sets without val.txt: carve it out of train
                train = np.random.default_rng(seed).permutation(split["train"])
                n_val = max(1, int(round(val_size * len(train))))
                split["val"], split["train"] = np.sort(train[:n_val]), np.sort(train[n_val:])
            return split
        order = np.random.default_rng(seed).permutation(len(self.items))
        n_test = int(round(test_size * len(order)))
        n_val = max(1, int(round(val_size * len(order))))
        if len(order) - n_test - n_val < 1:
            raise DataError(Problem(str(self.root), f"{len(order)} image(s) are too few to split "
                                    "into train, val and test; add images"))
        return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
                "train": np.sort(order[n_test + n_val:])}

    def to_torch(self, train: bool = False, hflip: bool = True):
        """A torch dataset of ``(image tensor in [0, 1], target)``; see
        :class:`~sigclass.data.detection_torch.BoxDataset`."""
        from .detection_torch import BoxDataset

        return BoxDataset(self.items, self.classes, train=train, hflip=hflip)

    def report(self) -> dict:
        """What was read, left out and clipped (the run's ``data_report.json``)."""
        return {"layout": self.layout, "root": str(self.root), "images": len(self.items),
                "classes": self.classes, "boxes": self.n_boxes(),
                "skipped": [{"path": p.path, "reason": p.reason} for p in self.skipped],
                "clipped_boxes": len(self.clipped), "clipped": self.clipped[:1000]}


def _check_images(found: Annotations, records, limits: FileLimits):
    """``(record, (problem, (width, height)))`` for each record, images decoded on threads."""
    from PIL import Image

    def check(record):
        path = found.root / record.key
        _, reason = check_image_file(path, limits, found.root)
        if reason:
            return record, (reason, None)
        with Image.open(path) as image:
            return record, ("", image.size)

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        return list(pool.map(check, records))


def _item(root: Path, record, size) -> tuple[DetectionItem, list[Problem], list[str]]:
    """The image's boxes clipped to it; boxes with no area left are problems."""
    width, height = size
    problems, clipped, boxes, labels = [], [], [], []
    if record.size is not None and tuple(record.size) != (width, height):
        problems.append(Problem(record.source, f"annotated size {record.size[0]}x{record.size[1]} "
                                f"differs from the image's {width}x{height}; the boxes may belong "
                                "to another version of the image"))
    for box in record.boxes:
        if box.xmax <= box.xmin or box.ymax <= box.ymin:
            problems.append(Problem(box.where, f"box of zero or negative area ({box.xmin:g}, "
                                    f"{box.ymin:g}, {box.xmax:g}, {box.ymax:g}); xmax must exceed "
                                    "xmin and ymax ymin"))
            continue
        x0, y0 = min(max(box.xmin, 0.0), width), min(max(box.ymin, 0.0), height)
        x1, y1 = min(max(box.xmax, 0.0), width), min(max(box.ymax, 0.0), height)
        if (x0, y0, x1, y1) != (box.xmin, box.ymin, box.xmax, box.ymax):
            if x1 <= x0 or y1 <= y0:
                problems.append(Problem(box.where, f"box lies outside the {width}x{height} image"))
                continue
            clipped.append(box.where)
        boxes.append((x0, y0, x1, y1))
        labels.append(box.label)
    array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    item = DetectionItem(record.key, root / record.key, array, tuple(labels), width, height)
    return item, problems, clipped
