"""Batch scoring: many inputs to a CSV or Parquet file, streamed chunk by chunk, resumable after
a crash.

Rows are appended and flushed after every chunk. A Parquet output is written through a CSV
journal next to it (``<output>.partial.csv``) that becomes the Parquet file, atomically, once
every input is scored; an interrupted run leaves the journal, and the next run resumes from it. On a restart the inputs already in the output
are skipped, and a last line cut off by the crash is dropped first, so no input is scored twice
and none is lost. An input that cannot be read gets a row with its error instead of stopping
the batch.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .data.images import IMAGE_EXTENSIONS
from .exceptions import DataError, Problem

logger = logging.getLogger(__name__)


def expand_image_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Files as given; folders expanded to their image files (recursively, sorted)."""
    files: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files += sorted(str(p) for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            files.append(str(path))
        else:
            raise DataError(Problem(str(raw), "no such file or folder"))
    return files


def _completed(output: Path) -> set[str]:
    """Inputs already scored in ``output``; a partial last line is cut off first."""
    if not output.is_file():
        return set()
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(output, "r+b") as handle:
            handle.truncate(cut)
        logger.warning("Dropped a partial last line of %s (interrupted write)", output)
    with open(output, newline="") as handle:
        return {row["input"] for row in csv.DictReader(handle)}


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for begin in range(0, len(items), size):
        yield items[begin:begin + size]


def predict_files(predictor, inputs: Iterable[str | Path], output: str | Path,
                  batch_size: int = 64, progress: bool = True) -> int:
    """Score image files, or the cases of signal files, into a CSV or Parquet file
    (``input, predicted, confidence, p_<class>..., error``).

    A signal file gives one row per case, its input named ``<file>#<case id>``; the file is read
    with the model's reading options (windowing, columns).

    Returns:
        The number of rows written by this call.
    """
    output = Path(output)
    if output.suffix.lower() == ".parquet":
        return _predict_to_parquet(predictor, inputs, output, batch_size, progress)
    cases = None
    if predictor.modality == "signal":
        from .data.signals import read_signal_inputs

        cases = read_signal_inputs(inputs, predictor.data_config)
    files = list(cases) if cases is not None else expand_image_inputs(inputs)
    done = _completed(output)
    todo = [f for f in files if f not in done]
    if done:
        logger.info("Resuming: %d of %d inputs already scored in %s", len(done), len(files), output)
    fields = ["input", "predicted", "confidence", *[f"p_{c}" for c in predictor.classes], "error"]
    output.parent.mkdir(parents=True, exist_ok=True)
    new_file = not output.is_file() or output.stat().st_size == 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="predict", unit="item")
    written = 0
    with open(output, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if new_file:
            writer.writeheader()
        for chunk in _chunks(todo, batch_size):
            for row in _score_chunk(predictor, chunk, batch_size, cases):
                writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
            written += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return written


def _score_chunk(predictor, chunk: list[str], batch_size: int, cases: dict | None = None) -> list[dict]:
    def payload(keys: list[str]) -> list:
        return [cases[k] for k in keys] if cases is not None else keys

    try:
        proba = predictor.predict_proba(payload(chunk), batch_size=batch_size)
        return [_row(predictor, item, p) for item, p in zip(chunk, proba, strict=True)]
    except DataError:
        rows = []  # find the bad inputs one by one; the others are scored normally
        for item in chunk:
            try:
                rows.append(_row(predictor, item, predictor.predict_proba(payload([item]))[0]))
            except DataError as exc:
                rows.append({"input": item, "error": str(exc)})
        return rows


def _row(predictor, item: str, proba: np.ndarray) -> dict:
    best = int(np.argmax(proba))
    return {
        "input": item, "predicted": predictor.classes[best], "confidence": float(proba[best]),
        **{f"p_{c}": float(v) for c, v in zip(predictor.classes, proba, strict=True)}, "error": "",
    }


def use_fast_backend(predictor, backend: str = "auto") -> str:
    """Switch ``predictor`` to ``backend``; ``auto`` is ONNX Runtime on a CPU (the graph exported
    once and cached) and PyTorch on CUDA or for networks ONNX cannot hold. Returns the backend."""
    from .inference import choose_backend
    from .serve.model import onnx_cache_path

    if getattr(predictor, "members", None):  # an ensemble: each member on its own backend
        predictor.use_backend(backend)
        return backend
    resolved = choose_backend(backend, predictor.device)
    if backend == "auto" and not getattr(predictor.network, "onnx_exportable", True):
        resolved = "torch"
    predictor.use_backend(resolved, onnx_cache_path(predictor) if resolved == "onnx" else None)
    return resolved


def journal_path(output: Path) -> Path:
    """The CSV a Parquet output is streamed into until it is complete."""
    return output.with_name(output.name + ".partial.csv")


def _predict_to_parquet(predictor, inputs, output: Path, batch_size: int, progress: bool) -> int:
    import pandas as pd

    from ._utils import atomic_write

    journal = journal_path(output)
    if output.is_file() and not journal.is_file():
        # a finished output: carry its rows over, so that new inputs are added to them
        pd.read_parquet(output).to_csv(journal, index=False)
    written = predict_files(predictor, inputs, journal, batch_size, progress)
    table = pd.read_csv(journal, dtype={"input": str, "predicted": str, "error": str},
                        keep_default_na=False, na_values={"confidence": [""]})
    for column in [c for c in table.columns if c.startswith("p_") or c == "confidence"]:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    atomic_write(output, lambda tmp: table.to_parquet(tmp, index=False))
    journal.unlink()
    return written
