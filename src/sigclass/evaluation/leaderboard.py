"""The leaderboard of a comparison: one row per trained model, printed and saved."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._utils import write_json, write_text

COLUMNS = (
    ("name", "entry", "{}"),
    ("model", "network", "{}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("balanced_accuracy", "bal. acc.", "{:.4f}"),
    ("f1_macro", "macro-F1", "{:.4f}"),
    ("train_seconds", "train s", "{:.1f}"),
    ("items_per_second", "items/s", "{:.1f}"),
)


@dataclass
class Leaderboard:
    """Rows of test metrics, best accuracy first, with optional published reference figures.

    Attributes:
        rows: One dict per model: ``name``, ``mode``, ``model`` and the metric columns.
        references: Published figures to print beside the rows: ``name``, ``accuracy`` (and any
            other column), ``source``.
        title: Heading of the Markdown table.
        skipped: Names of entries not run (a comparison's time limit was used up).
    """

    rows: list[dict[str, Any]]
    references: list[dict[str, Any]] = field(default_factory=list)
    title: str = "Leaderboard"
    skipped: list[str] = field(default_factory=list)

    def sorted_rows(self) -> list[dict[str, Any]]:
        return sorted(self.rows, key=lambda r: (-(r.get("accuracy") or 0), r.get("train_seconds") or 0))

    def to_markdown(self) -> str:
        header = "| " + " | ".join(label for _, label, _ in COLUMNS) + " |"
        lines = [f"### {self.title}", "", header, "|" + "---|" * len(COLUMNS)]
        for row in self.sorted_rows():
            lines.append("| " + " | ".join(_cell(row.get(key), fmt) for key, _, fmt in COLUMNS) + " |")
        if self.skipped:
            lines += ["", f"Not run within the time limit: {', '.join(self.skipped)}."]
        if self.references:
            lines += ["", "Published reference figures (not run here):", "",
                      "| reference | accuracy | source |", "|---|---|---|"]
            for ref in self.references:
                lines.append(f"| {ref['name']} | {_cell(ref.get('accuracy'), '{:.4f}')} | {ref.get('source', '')} |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "rows": self.sorted_rows(), "references": self.references,
                "skipped": self.skipped}

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        folder = Path(folder)
        return (write_text(folder / "leaderboard.md", self.to_markdown()),
                write_json(folder / "leaderboard.json", self.to_dict()))


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)
