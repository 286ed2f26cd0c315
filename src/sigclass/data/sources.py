"""Named datasets: ``elpv`` and ``elpv:binary``, the ELPV solar-cell images (PyPI ``elpv-dataset``).

ELPV (Deitsch et al. 2019; license CC BY-NC-SA 4.0) holds 2,624 300x300 grayscale
electroluminescence images of solar cells, each with a defect probability of 0, 1/3, 2/3 or 1.
``elpv`` has those four classes; ``elpv:binary`` splits at 0.5 into functional and defective.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .._utils import default_cache_dir
from ..exceptions import DataError, Problem
from .images import ImageDataset

ELPV_CLASSES = {0.0: "functional", 1 / 3: "defect_33", 2 / 3: "defect_67", 1.0: "defective"}


def is_named_source(source: str) -> bool:
    return str(source).split(":", 1)[0].lower() == "elpv"


def elpv_manifest(variant: str = "", cache_dir: Path | None = None) -> tuple[Path, Path]:
    """Write the manifest of an ELPV variant; returns ``(manifest, root)``."""
    try:
        import elpv_dataset
    except ImportError:
        raise DataError(Problem("elpv", "the ELPV images come from the PyPI package "
                                "'elpv-dataset'; install it with `pip install elpv-dataset`")) from None
    if variant not in ("", "binary"):
        raise DataError(Problem(f"elpv:{variant}", "unknown ELPV variant; use 'elpv' (4 classes) "
                                "or 'elpv:binary' (functional vs defective)"))
    root = Path(elpv_dataset.__file__).parent / "data"
    folder = cache_dir or default_cache_dir() / "datasets"
    manifest = folder / f"elpv{'-' + variant if variant else ''}.csv"
    rows = []
    for line in (root / "labels.csv").read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        probability = float(parts[1])
        if variant == "binary":
            label = "defective" if probability >= 0.5 else "functional"
        else:
            label = min(ELPV_CLASSES.items(), key=lambda kv: abs(kv[0] - probability))[1]
        rows.append((parts[0], label))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = manifest.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    tmp.replace(manifest)
    return manifest, root


def load_named(source: str, on_bad_file: str = "error", min_per_class: int = 1):
    """Load a named dataset such as ``elpv`` or ``elpv:binary``."""
    name, _, variant = str(source).partition(":")
    manifest, root = elpv_manifest(variant.lower())
    dataset = ImageDataset.from_manifest(manifest, root=root, on_bad_file=on_bad_file,
                                         min_per_class=min_per_class)
    dataset.source = source
    return dataset
