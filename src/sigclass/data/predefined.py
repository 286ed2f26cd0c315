"""Predefined splits: the parts a user set aside themselves (split folders, a manifest's ``split``
column, ``--val-dir``/``--test-dir``, a benchmark's own train/test files).

The rules, the same for images and signals:

- a part the user set aside is never trained on;
- ``train`` + ``test``: both kept, the validation part is drawn from ``train``;
- ``train`` + ``val`` only: ``val`` is the held-out **test** part (it is the only data the model never
  sees), and the validation part is drawn from ``train``;
- ``train`` + ``val`` + ``test``: all three kept;
- ``train`` alone: validation and test are drawn from it as for data without a split.

Split names are matched in any case: ``train``; ``val``, ``valid``, ``validation``; ``test``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..exceptions import DataError, Problem

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "testing": "test"}


def canonical_split(name: str) -> str | None:
    """``train``, ``val`` or ``test`` for a split name in any case and spelling; else ``None``."""
    return SPLIT_NAMES.get(str(name).strip().lower())


@dataclass
class PredefinedParts:
    """The parts a dataset brings with it.

    Attributes:
        parts: Item ids of each fixed part (``train``, ``val``, ``test``; missing parts are drawn).
        sources: Where each part came from, for the report (e.g. ``"the folder val/"``).
        notes: Sentences saying how the rules applied (e.g. that ``val/`` is the test part).
    """

    parts: dict[str, list[str]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def fixed_test(self) -> list[str] | None:
        return self.parts.get("test")

    def restricted_to(self, ids) -> PredefinedParts:
        """The parts without the items a dataset left out (bad files skipped); returns ``self``."""
        kept = set(ids)
        self.parts = {k: [i for i in v if i in kept] for k, v in self.parts.items()}
        return self

    def summary(self) -> list[str]:
        """Lines such as ``"test = the folder val/ (26 items)"``."""
        lines = [f"{part} = {self.sources[part]} ({len(self.parts[part])} items)"
                 for part in ("train", "val", "test") if part in self.parts]
        return lines + list(self.notes)

    def to_dict(self) -> dict:
        return {"sources": dict(self.sources), "counts": {k: len(v) for k, v in self.parts.items()},
                "notes": list(self.notes)}


def apply_rules(named: dict[str, tuple[str, list[str]]], where: str) -> PredefinedParts:
    """Turn the parts a user named into the fixed parts of a split, following the module's rules.

    Args:
        named: ``{canonical name: (source description, ids)}``, e.g.
            ``{"train": ("the folder train/", [...]), "val": ("the folder val/", [...])}``.
        where: The dataset, for messages.
    """
    if "train" not in named:
        found = ", ".join(source for source, _ in named.values())
        raise DataError(Problem(where, f"has {found} but no training part; add a train/ folder "
                                "(or rows with split=train), the part the model learns from"))
    result = PredefinedParts()
    for part, (source, ids) in named.items():
        result.parts[part], result.sources[part] = list(ids), source
    if "val" in named and "test" not in named:
        result.parts["test"] = result.parts.pop("val")
        result.sources["test"] = result.sources.pop("val")
        result.notes.append(f"{named['val'][0]} is the held-out test part (no test part given); "
                            "validation is drawn from the training part")
    elif "test" in named and "val" not in named:
        result.notes.append("validation is drawn from the training part")
    return result


def collect_parts(candidates: list[tuple[str, str]], part_of: dict[str, str],
                  source_of: dict[str, str]) -> tuple[dict[str, tuple[str, list[str]]], list[Problem]]:
    """The named parts of ``(id, label)`` candidates (``part_of[id]``, described by
    ``source_of[part]``) for :func:`apply_rules`, and the classes missing from a part."""
    named: dict[str, tuple[str, list[str]]] = {}
    labels_by_part: dict[str, set[str]] = {}
    for key, label in candidates:
        part = part_of[key]
        named.setdefault(part, (source_of[part], []))[1].append(key)
        labels_by_part.setdefault(part, set()).add(label)
    return named, check_same_classes(labels_by_part, {p: s for p, (s, _) in named.items()})


def check_same_classes(labels_by_part: dict[str, set[str]], sources: dict[str, str]) -> list[Problem]:
    """Every class in every part: a class missing from a part is a problem naming the part."""
    everything = set().union(*labels_by_part.values()) if labels_by_part else set()
    problems = []
    for part, labels in labels_by_part.items():
        for label in sorted(everything - labels):
            problems.append(Problem(sources.get(part, part), f"has no items of class '{label}', which "
                                    "other parts have; every part needs every class (add its items "
                                    "or remove the class everywhere)"))
    return problems
