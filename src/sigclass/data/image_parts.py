"""Image parts given apart (``--val-dir``, ``--test-dir``) joined into one dataset."""

from __future__ import annotations

from ..exceptions import DataError
from .image_files import ImageItem
from .images import ImageDataset
from .predefined import apply_rules, check_same_classes


def merge_image_parts(parts: dict[str, ImageDataset], sources: dict[str, str],
                      where: str) -> ImageDataset:
    """One dataset of several parts (``--val-dir``, ``--test-dir``): ids prefixed by the part,
    the parts kept as a predefined split; every part needs the same classes."""
    problems = check_same_classes({p: set(ds.classes) for p, ds in parts.items()}, sources)
    if problems:
        raise DataError(problems)
    order = [p for p in ("train", "val", "test") if p in parts]
    items, ids = [], {}
    for part in order:
        renamed = [ImageItem(f"{part}/{i.key}", i.path, i.label, i.sha256) for i in parts[part].items]
        ids[part] = [i.key for i in renamed]
        items += renamed
    first = parts[order[0]]
    merged = ImageDataset(items, sorted({i.label for i in items}), first.root,
                          [p for d in parts.values() for p in d.skipped],
                          [p for d in parts.values() for p in d.ignored], where)
    merged.predefined = apply_rules({p: (sources[p], ids[p]) for p in order}, where)
    return merged


def join_image_datasets(base: ImageDataset, added: ImageDataset, prefix: str) -> ImageDataset:
    """The items of ``base`` and those of ``added`` (ids prefixed by ``prefix``) as one dataset
    (``sigclass update``); ``base``'s ids, root and predefined parts are kept, so its split
    still applies."""
    renamed = [ImageItem(f"{prefix}{i.key}", i.path, i.label, i.sha256) for i in added.items]
    items = list(base.items) + renamed
    joined = ImageDataset(items, sorted({i.label for i in items}), base.root,
                          [*base.skipped, *added.skipped], [*base.ignored, *added.ignored],
                          base.source)
    joined.predefined = base.predefined
    return joined
