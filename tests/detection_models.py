"""Test helpers for detection: a tiny BCCD copy and a detector trained on it for one epoch."""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree

import pytest

BCCD = Path(os.environ.get("SIGCLASS_BCCD",
                           Path(__file__).resolve().parents[2] / "shared" / "datasets" / "BCCD"))
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
# skipped where the shared data is absent, except in CI, which always has it (and fails without)
needs_bccd = pytest.mark.skipif(not BCCD.is_dir() and not IN_CI,
                                reason=f"BCCD not found at {BCCD} (set SIGCLASS_BCCD)")


def tiny_bccd(root: Path, n: int = 8, shrink: int = 4) -> Path:
    """The first ``n`` BCCD images shrunk ``shrink`` times (4: 160x120), boxes scaled alike, as
    a VOC folder."""
    from PIL import Image

    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for xml in sorted((BCCD / "Annotations").glob("*.xml"))[:n]:
        tree = ElementTree.parse(xml)
        for element in tree.getroot().iter():
            if element.tag in ("width", "height", "xmin", "ymin", "xmax", "ymax"):
                element.text = str(int(element.text) // shrink)
        tree.write(root / "Annotations" / xml.name)
        name = tree.getroot().findtext("filename")
        with Image.open(BCCD / "JPEGImages" / name) as image:
            image.resize((image.width // shrink, image.height // shrink)).save(
                root / "JPEGImages" / name)
    return root


def train_detection_model(base: Path) -> Path:
    """`sigclass train` on :func:`tiny_bccd` (8 images, 96 px, 1 epoch); returns the run folder
    (its images are in ``base / "bccd" / "JPEGImages"``)."""
    from sigclass.cli import main

    data = tiny_bccd(base / "bccd")
    out = base / "run"
    code = main(["train", str(data), "--out", str(out), "--epochs", "1", "--image-size", "96",
                 "--batch-size", "4", "--set", "tracking.enabled=false", "-q"])
    assert code == 0
    return out
