"""Every figure in the README's tables comes from a results file that a script writes.

A table with measured figures (percentages, numbers with decimals) is preceded by a marker
``<!-- source: bench/results/NAME.json [more files] -->``; each percentage and each number with
decimals in the table must be found among the numbers of those files (as a fraction or a
percentage, to the table's rounding).
Goals written as ``>= 83 %`` are targets, not measurements, and are not looked up. A table of
settings says so with ``<!-- source: none (...) -->`` and may hold no percentages.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MEASURED = re.compile(r"\d\s?(%|img/s|ms\b)|\d\.\d")
# A percentage, or a number with decimals (accuracies without the sign, ratios, milliseconds).
FIGURE = re.compile(r"(?:(?:>=|≥|<=|≤)\s*)?(?<![\d.])(\d+(?:,\d{3})*(?:\.\d+)?)(\s?%|(?=[^\d.%]|$))")
MARKER = re.compile(r"<!--\s*source:\s*(.+?)\s*-->")


def readme_tables() -> list[tuple[int, list[str], list[str]]]:
    """(first line number, table lines, the up to 8 lines before it) of each README table."""
    lines = README.read_text().splitlines()
    tables, start = [], None
    for number, line in enumerate(lines + [""]):
        if line.startswith("|") and start is None:
            start = number
        elif not line.startswith("|") and start is not None:
            tables.append((start + 1, lines[start:number], lines[max(0, start - 8):start]))
            start = None
    return tables


def numbers_in(value) -> list[float]:
    """Every number in a JSON document (dict values, lists, and numbers written in strings)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)] if math.isfinite(value) else []
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers_in(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers_in(item)]
    if isinstance(value, str):
        return [float(n) for n in re.findall(r"\d+(?:\.\d+)?", value)]
    return []


def found(figure: str, numbers: list[float]) -> bool:
    """Whether a table's percentage is one of the numbers, to the figure's own rounding."""
    decimals = len(figure.split(".")[1]) if "." in figure else 0
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    target = float(figure)
    return any(abs(n - target) <= tolerance or abs(100 * n - target) <= tolerance for n in numbers)


MEASURED_TABLES = [t for t in readme_tables() if any(MEASURED.search(row) for row in t[1][2:])]


def test_the_readme_has_measured_tables():
    assert len(MEASURED_TABLES) >= 5


@pytest.mark.parametrize("start, table, before", MEASURED_TABLES,
                         ids=[f"line{t[0]}" for t in MEASURED_TABLES])
def test_each_measured_table_names_its_source(start, table, before):
    markers = [m.group(1) for line in before for m in MARKER.finditer(line)]
    assert markers, (f"README.md line {start}: a table of measured figures without a "
                     f"'<!-- source: bench/results/NAME.json -->' marker above it")
    if markers[-1].startswith("none"):
        assert not any("%" in row for row in table[2:]), (
            f"README.md line {start}: a table marked as holding no measurements has percentages")
        return
    paths = [REPO / p for p in markers[-1].split()]
    for path in paths:
        assert path.is_file(), f"README.md line {start}: source {path} does not exist"
    numbers = [n for path in paths for n in numbers_in(json.loads(path.read_text()))]
    missing = []
    for row in table[2:]:
        for cell in row.strip("|").split("|"):
            cell = re.sub(r"`[^`]*`", "", cell)  # code: option values, model names
            for match in FIGURE.finditer(cell):
                figure = match.group(1).replace(",", "")
                if re.match(r"(>=|≥|<=|≤)", match.group(0)):
                    continue  # a goal, not a measurement
                if "." not in figure and not match.group(2).strip():
                    continue  # whole numbers without a unit: counts, seconds, sizes
                if not found(figure, numbers):
                    missing.append(figure)
    assert not missing, (f"README.md line {start}: {', '.join(sorted(set(missing)))} "
                         f"not found in {', '.join(markers[-1].split())}")
