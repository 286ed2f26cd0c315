"""Box annotations from Pascal VOC folders, COCO JSON files and CSV manifests.

Each reader turns its format into :class:`AnnotatedImage` records (an image path relative to the
dataset root and its raw boxes) and a list of :class:`~sigclass.exceptions.Problem` naming the
annotation file; nothing is checked against the images here (see
:mod:`sigclass.data.detection`). Every problem of a file is collected, none stops the reading.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from ..exceptions import DataError, Problem
from .file_checks import FileLimits, FileProblem, read_checked
from .image_files import IMAGE_EXTENSIONS

CSV_COLUMNS = ("path", "xmin", "ymin", "xmax", "ymax", "label")
VOC_SPLITS = ("train", "val", "test")


@dataclass
class RawBox:
    """One box as written in the annotation (pixels, ``xmin, ymin, xmax, ymax``) and where."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    label: str
    where: str


@dataclass
class AnnotatedImage:
    """An image and its boxes as an annotation file describes them."""

    key: str  # image path relative to the dataset root (POSIX)
    source: str  # the annotation file (and entry) the boxes come from
    boxes: list[RawBox] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (width, height) as annotated, when given


@dataclass
class Annotations:
    """What a reader found: images with boxes, problems, and a predefined split if any."""

    images: list[AnnotatedImage]
    problems: list[Problem]
    root: Path
    image_folder: Path
    parts: dict[str, str] = field(default_factory=dict)  # image key -> train/val/test
    classes: list[str] | None = None  # declared by the format (COCO categories)


def detect_layout(path: str | Path) -> str | None:
    """``"voc"``, ``"coco"`` or ``"csv"`` when ``path`` looks like a detection dataset, else None.

    A folder with ``Annotations/*.xml`` is VOC; a folder with an ``instances*.json`` file (or
    ``annotations/instances*.json``), or such a JSON file itself, is COCO; a CSV whose header is
    ``path,xmin,ymin,xmax,ymax,label`` is a box manifest.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "Annotations").is_dir() and any((path / "Annotations").glob("*.xml")):
            return "voc"
        if _coco_file(path) is not None:
            return "coco"
        return None
    if path.suffix.lower() == ".json" and path.is_file():
        return "coco"
    if path.suffix.lower() == ".csv" and path.is_file():
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            header = next(csv.reader(handle), [])
        if [h.strip().lower() for h in header[:6]] == list(CSV_COLUMNS):
            return "csv"
    return None


def _coco_file(folder: Path) -> Path | None:
    for base in (folder, folder / "annotations"):
        found = sorted(base.glob("instances*.json")) if base.is_dir() else []
        if found:
            return found[0]
    return None


def _number(text, where: str, name: str, problems: list[Problem]) -> float | None:
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        problems.append(Problem(where, f"'{name}' is not a number (got {str(text)[:40]!r})"))
        return None
    if value != value or value in (float("inf"), float("-inf")):
        problems.append(Problem(where, f"'{name}' is not a finite number (got {value})"))
        return None
    return value


def read_voc(root: Path, limits: FileLimits) -> Annotations:
    """``root/Annotations/*.xml`` with images in ``root/JPEGImages``; the image is named by each
    file's ``<filename>`` (the ``<path>`` field, often from another machine, is ignored)."""
    problems: list[Problem] = []
    images: list[AnnotatedImage] = []
    for xml_path in sorted((root / "Annotations").glob("*.xml")):
        where = f"Annotations/{xml_path.name}"
        try:
            tree = ElementTree.fromstring(read_checked(xml_path, limits, root))
        except FileProblem as exc:
            problems.append(Problem(where, exc.reason))
            continue
        except (OSError, ElementTree.ParseError) as exc:
            problems.append(Problem(where, f"not a readable VOC XML file ({exc})"))
            continue
        filename = (tree.findtext("filename") or "").strip()
        if not filename:
            filename = xml_path.stem + ".jpg"
        record = AnnotatedImage(f"JPEGImages/{Path(filename).name}", where)
        width, height = tree.findtext("size/width"), tree.findtext("size/height")
        if width and height:
            try:
                record.size = (int(float(width)), int(float(height)))
            except ValueError:
                problems.append(Problem(where, f"<size> is not numeric ({width!r} x {height!r})"))
        for index, obj in enumerate(tree.findall("object")):
            place = f"{where} object {index + 1}"
            label = (obj.findtext("name") or "").strip()
            coords = [_number(obj.findtext(f"bndbox/{k}"), place, k, problems)
                      for k in ("xmin", "ymin", "xmax", "ymax")]
            if None not in coords:
                record.boxes.append(RawBox(*coords, label=label, where=place))
        images.append(record)
    parts = _voc_parts(root, problems)
    return Annotations(images, problems, root, root / "JPEGImages", parts)


def _voc_parts(root: Path, problems: list[Problem]) -> dict[str, str]:
    """``ImageSets/Main/{train,val,test}.txt`` as a predefined split (image key -> part)."""
    folder = root / "ImageSets" / "Main"
    parts: dict[str, str] = {}
    for part in VOC_SPLITS:
        listing = folder / f"{part}.txt"
        if not listing.is_file():
            continue
        for line in listing.read_text(encoding="utf-8", errors="replace").split():
            key = f"JPEGImages/{line.strip()}.jpg"
            if key in parts and parts[key] != part:
                problems.append(Problem(f"ImageSets/Main/{part}.txt", f"'{line}' is also listed in "
                                        f"{parts[key]}.txt; an image belongs to one part"))
            parts[key] = part
    return parts


def read_coco(path: Path, limits: FileLimits) -> Annotations:
    """A COCO ``instances*.json`` (``images``, ``annotations``, ``categories``); images are
    looked up beside it, in ``images/``, or for ``annotations/x.json`` in the folder above."""
    json_path = _coco_file(path) if path.is_dir() else path
    if json_path is None:
        raise DataError(Problem(str(path), "no COCO instances*.json file found"))
    root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    where = str(json_path.relative_to(root))
    try:
        document = json.loads(read_checked(json_path, limits, None))
    except (FileProblem, OSError, ValueError) as exc:
        raise DataError(Problem(where, f"not a readable COCO JSON file ({exc})")) from None
    problems: list[Problem] = []
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list)
                                                 for k in ("images", "annotations", "categories")):
        raise DataError(Problem(where, "a COCO file needs the lists 'images', 'annotations' and "
                                "'categories'"))
    folder = next((f for f in (root / "images", root) if f.is_dir() and any(
        (f / str(i.get("file_name", ""))).is_file() for i in document["images"][:20]
        if isinstance(i, dict))), root)
    categories = {c.get("id"): str(c.get("name", "")).strip() for c in document["categories"]
                  if isinstance(c, dict)}
    by_id: dict = {}
    images = []
    prefix = "" if folder == root else f"{folder.name}/"
    for index, entry in enumerate(document["images"]):
        if not isinstance(entry, dict) or "id" not in entry or not entry.get("file_name"):
            problems.append(Problem(f"{where} images[{index}]", "needs 'id' and 'file_name'"))
            continue
        record = AnnotatedImage(prefix + str(entry["file_name"]), f"{where} image {entry['id']}")
        if isinstance(entry.get("width"), int | float) and isinstance(entry.get("height"), int | float):
            record.size = (int(entry["width"]), int(entry["height"]))
        by_id[entry["id"]] = record
        images.append(record)
    for index, ann in enumerate(document["annotations"]):
        place = f"{where} annotations[{index}]"
        if not isinstance(ann, dict):
            problems.append(Problem(place, "not an object"))
            continue
        record = by_id.get(ann.get("image_id"))
        if record is None:
            problems.append(Problem(place, f"names image_id {ann.get('image_id')!r}, which is not "
                                    "in 'images'"))
            continue
        label = categories.get(ann.get("category_id"))
        if label is None:
            problems.append(Problem(place, f"unknown category_id {ann.get('category_id')!r}; "
                                    f"'categories' lists {sorted(map(str, categories))}"))
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            problems.append(Problem(place, "'bbox' must be [x, y, width, height]"))
            continue
        x, y, w, h = (_number(v, place, n, problems) for v, n in zip(bbox, "xywh", strict=True))
        if None not in (x, y, w, h):
            record.boxes.append(RawBox(x, y, x + w, y + h, label=label, where=place))
    named = sorted({n for n in categories.values() if n})
    return Annotations(images, problems, root, folder, classes=named)


def read_box_csv(path: Path, limits: FileLimits) -> Annotations:
    """A CSV of ``path,xmin,ymin,xmax,ymax,label``, one row per box, paths relative to the CSV's
    folder; a row with only ``path`` (the box columns empty) is an image without objects."""
    root = path.parent
    problems: list[Problem] = []
    records: dict[str, AnnotatedImage] = {}
    try:
        text = read_checked(path, limits, None).decode("utf-8-sig")
    except (FileProblem, OSError, UnicodeDecodeError) as exc:
        raise DataError(Problem(path.name, f"not a readable CSV file ({exc})")) from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip().lower() for h in reader.fieldnames or []]
    if header[:6] != list(CSV_COLUMNS):
        raise DataError(Problem(path.name, f"the header must start with {','.join(CSV_COLUMNS)}; "
                                f"got {','.join(header) or 'nothing'}"))
    for line, row in enumerate(reader, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        place = f"{path.name} line {line}"
        key = row["path"].replace("\\", "/")
        if not key:
            problems.append(Problem(place, "empty 'path'"))
            continue
        record = records.setdefault(key, AnnotatedImage(key, place))
        if not any(row[k] for k in CSV_COLUMNS[1:]):
            continue
        coords = [_number(row[k], place, k, problems) for k in CSV_COLUMNS[1:5]]
        if None not in coords:
            record.boxes.append(RawBox(*coords, label=row["label"], where=place))
    return Annotations(list(records.values()), problems, root, root)


def unlisted_images(annotations: Annotations) -> list[str]:
    """Image files of the image folder that no annotation names (keys relative to the root)."""
    named = {record.key for record in annotations.images}
    folder = annotations.image_folder
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
            key = path.relative_to(annotations.root).as_posix()
            if key not in named:
                found.append(key)
    return found
