"""Getting a run ready: its dataset, its resolved defaults and its split.

``train``, ``compare`` and ``tune`` all start here, so a comparison's entries and a study's trials
see the data exactly as a single run does: the same checks, the same parts given apart, the
same near-duplicate groups kept together.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..data.file_checks import DEFAULT_MAX_FILE_MB
from ..data.leakage import check_leakage, describe, keep_together, near_duplicate_groups
from ..data.split import Split, make_split, min_class_size
from ..exceptions import ConfigError
from ..modalities import modality_of, resolve_modality


def load_dataset(source, modality: str = "auto", root=None, on_bad_file: str = "error",
                 min_per_class: int = 1, signal=None, *, max_file_mb: float = DEFAULT_MAX_FILE_MB,
                 follow_symlinks: bool = False):
    """Load images or signals from a folder, a manifest, a file or a named dataset.

    Args:
        source: The data source.
        modality: ``"auto"`` (detected from the source), ``"image"`` or ``"signal"``.
        root: Dataset root of a CSV manifest.
        on_bad_file: ``"error"`` or ``"skip"``.
        min_per_class: Fewest items a class needs.
        signal: The reading options of signal files (a ``SignalConfig`` or dict: windowing,
            length policy, column names).
        max_file_mb: Largest file read, in megabytes (checked before the file is opened; only
            regular files are read).
        follow_symlinks: Read symbolic links whose target lies outside the dataset root.
    """
    return resolve_modality(modality, source).load(source, root, on_bad_file, min_per_class, signal,
                                                   max_file_mb=max_file_mb,
                                                   follow_symlinks=follow_symlinks)


def load_parts(data, extra: dict[str, str], modality: str = "auto", root=None,
               on_bad_file: str = "error", signal=None, **files):
    """The training pool ``data`` and the parts given apart (``{"val"|"test": source}``, as
    ``--val-dir``/``--test-dir``) as one dataset whose given parts are a predefined split."""
    train_set = load_dataset(data, modality, root, on_bad_file, 1 + ("val" not in extra), signal,
                             **files)
    if getattr(train_set, "predefined", None) is not None or getattr(train_set, "fixed_test", None):
        raise ConfigError(f"'{data}' already holds a split of its own (split folders, a 'split' "
                          "column or a benchmark's train/test files); drop --val-dir/--test-dir, "
                          "or point DATA at its training part only.")
    parts = {"train": train_set}
    for part, source in extra.items():
        parts[part] = load_dataset(source, train_set.modality, None, on_bad_file, 1, signal, **files)
    sources = {"train": f"'{data}'", **{part: f"'{source}' (--{part}-dir)" for part, source in extra.items()}}
    return modality_of(train_set).merge_parts(parts, sources, str(data))


def dataset_for(cfg: RunConfig):
    """The dataset a run configuration names (``data``, with ``val_dir``/``test_dir``)."""
    need = min_class_size(cfg.val_size, cfg.test_size)
    extra = {part: source for part, source in (("val", cfg.val_dir), ("test", cfg.test_dir)) if source}
    files = {"max_file_mb": cfg.max_file_mb, "follow_symlinks": cfg.follow_symlinks}
    if not extra:
        return load_dataset(cfg.data, cfg.modality, cfg.root, cfg.on_bad_file, need, cfg.signal, **files)
    return load_parts(cfg.data, extra, cfg.modality, cfg.root, cfg.on_bad_file, cfg.signal, **files)


def resolve_defaults(cfg: RunConfig, dataset) -> RunConfig:
    """``cfg`` with the data's modality, the mode's default network and, from scratch, no
    pretrained weights; a mode or network that does not fit the data is refused."""
    if cfg.modality not in ("auto", dataset.modality):
        raise ConfigError(f"The 'modality' option says {cfg.modality!r} but the data is {dataset.modality!r}.")
    cfg = cfg.updated({"modality": dataset.modality})
    modality = modality_of(cfg)
    modality.check_mode(cfg.mode, cfg.model)
    if cfg.model is None:
        cfg = cfg.updated({"model": modality.default_model(cfg.mode)})
    if cfg.mode == "scratch":
        cfg = cfg.updated({"pretrained": False})
    return cfg


def resolve_split(split: Split | str | Path | None, cfg: RunConfig, dataset) -> Split:
    """The split of a run: ``split`` (an object or a file), else ``cfg.split``, else a new one
    drawn with ``cfg.seed`` (the data's own parts kept, each near-duplicate group in one part).
    Every id must be in the data and unchanged; near-duplicates across the parts are reported
    in ``split.checks`` as ``cfg.on_leak`` says."""
    if split is None and cfg.split:
        split = cfg.split
    if isinstance(split, str | Path):
        split = Split.load(split)
    near = near_duplicate_groups(dataset, cfg.near_duplicates)
    kept: dict[str, int] = {}
    if split is None:
        split = make_split(dataset, cfg.val_size, cfg.test_size, cfg.seed,
                           fixed_test=getattr(dataset, "fixed_test", None))
        if not getattr(dataset, "predefined", None) and getattr(dataset, "fixed_test", None) is None:
            kept = keep_together(split, dataset, near)  # each near-duplicate group to one part
    split.indices(dataset)  # every id present and unchanged, or a clear error
    split.checks["near_duplicates"] = check_leakage(split, dataset, cfg.on_leak,
                                                    cfg.near_duplicates, groups=near)
    if split.checks["near_duplicates"] is not None:
        split.checks["near_duplicates"].update(kept)
    return split


def split_summary(split: Split, predefined=None) -> list[str]:
    """Lines saying where each part came from, e.g. ``"test = the folder val/ (26 items)"``."""
    lines = [f"{name} = {split.sources.get(name, 'drawn at random')} ({len(split.part(name))} items)"
             for name in ("train", "val", "test")]
    lines += list(predefined.notes) if predefined is not None else []
    if "near_duplicates" in split.checks:
        lines.append(describe(split.checks["near_duplicates"]))
    return lines
