"""Test helpers for model folders: a copy with edited ``model.json`` fields, and a module's own
feature cache."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def edited_copy(model_dir: Path, destination: Path, **fields: Any) -> Path:
    """A copy of ``model_dir`` whose ``model.json`` has ``fields`` set (as a careless or hostile
    edit would leave it); the other files are untouched."""
    folder = Path(shutil.copytree(model_dir, destination))
    document = json.loads((folder / "model.json").read_text())
    document.update(fields)
    (folder / "model.json").write_text(json.dumps(document))
    return folder


@contextmanager
def own_cache(folder: Path) -> Iterator[None]:
    """``SIGCLASS_CACHE_DIR`` set to ``folder / "cache"`` for a module's fixtures (servers they
    start inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGCLASS_CACHE_DIR", str(folder / "cache"))
        yield
