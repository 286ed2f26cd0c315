"""Batch scoring (``sigclass predict``): many inputs to a CSV or Parquet file, streamed chunk by
chunk, resumable after a crash.

Rows are appended and flushed after every chunk. A Parquet output is written through a CSV
journal next to it (``<output>.partial.csv``) that becomes the Parquet file, atomically, once
every input is scored; an interrupted run leaves the journal, and the next run resumes from it. On a restart the inputs already in the output
are skipped, and a last line cut off by the crash is dropped first, so no input is scored twice
and none is lost. An input that cannot be read gets a row with its error instead of stopping
the batch (the command still exits 0): a file that is not a regular file (a named pipe, a link
to a device) or is over 512 MB is refused from ``os.stat`` before it is opened, so scoring never
blocks on it. A path that does not exist stops the command before anything is scored.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .._utils import atomic_write
from ..evaluation.ood import score_records
from ..exceptions import DataError
from ..modalities import modality_of
from ..predictor import require_ood

logger = logging.getLogger(__name__)


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
                  batch_size: int = 64, progress: bool = True, reject_unknown: bool = False) -> int:
    """Score image files, or the cases of signal files, into a CSV or Parquet file
    (``input, predicted, confidence, p_<class>..., prediction_set, ood_score, unknown, error``).

    ``prediction_set`` is the row's conformal prediction set, its classes joined by ``|``, most
    probable first (empty for a model saved without a threshold, and for an ensemble).
    ``ood_score`` is how far the input is from the training data and ``unknown`` (``true`` or
    ``false``) whether it is above the model's threshold (both empty for a model saved without
    OOD data); with ``reject_unknown`` an unknown input's ``predicted`` is empty.

    A signal file gives one row per case, its input named ``<file>#<case id>``; the file is read
    with the model's reading options (windowing, columns).

    Returns:
        The number of rows written by this call.
    """
    output = Path(output)
    if reject_unknown:
        require_ood(predictor)
    if output.suffix.lower() == ".parquet":
        return _predict_to_parquet(predictor, inputs, output, batch_size, progress, reject_unknown)
    cases, todo = pending_inputs(predictor, inputs, output)
    fields = output_fields(predictor)
    output.parent.mkdir(parents=True, exist_ok=True)
    new_file = not output.is_file() or output.stat().st_size == 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="predict", unit="item")
    written = failed = 0
    with open(output, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if new_file:
            writer.writeheader()
        for chunk in _chunks(todo, batch_size):
            for row in score_rows(predictor, chunk, batch_size, cases, reject_unknown):
                writer.writerow(row)
                failed += bool(row["error"])
            handle.flush()
            os.fsync(handle.fileno())
            written += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    if failed:
        logger.warning("%d of %d input(s) could not be scored; their rows give the reason in the "
                       "'error' column", failed, written)
    return written


def score_rows(predictor, chunk: list[str], batch_size: int, cases: dict,
               reject_unknown: bool = False) -> list[dict]:
    """The output rows of the inputs ``chunk`` (keys of ``cases``, their payloads); an input
    that cannot be read gets a row with its error and the others are scored normally. With
    ``reject_unknown`` an unknown input's ``predicted`` is empty."""
    def rows_of(keys: list[str]) -> list[dict]:
        proba, ood = predictor.proba_and_ood([cases[k] for k in keys], batch_size=batch_size)
        records = score_records(predictor, proba, ood, reject_unknown)
        return [_row(item, r) for item, r in zip(keys, records, strict=True)]

    try:
        return rows_of(chunk)
    except DataError:
        rows = []  # find the bad inputs one by one; the others are scored normally
        for item in chunk:
            try:
                rows += rows_of([item])
            except DataError as exc:
                rows.append({"input": item, "error": str(exc)})
        return rows


def _row(item: str, record: dict) -> dict:
    unknown = record["unknown"]
    return {
        "input": item, "predicted": record["class"] or "", "confidence": record["confidence"],
        **{f"p_{c}": v for c, v in record["probabilities"].items()},
        "prediction_set": "|".join(record["prediction_set"] or []),
        "ood_score": "" if record["ood_score"] is None else record["ood_score"],
        "unknown": "" if unknown is None else str(unknown).lower(), "error": "",
    }


def journal_path(output: Path) -> Path:
    """The CSV a Parquet output is streamed into until it is complete."""
    return output.with_name(output.name + ".partial.csv")


def _predict_to_parquet(predictor, inputs, output: Path, batch_size: int, progress: bool,
                        reject_unknown: bool) -> int:
    import pandas as pd

    journal = journal_path(output)
    if output.is_file() and not journal.is_file():
        # a finished output: carry its rows over, so that new inputs are added to them
        pd.read_parquet(output).to_csv(journal, index=False)
    written = predict_files(predictor, inputs, journal, batch_size, progress, reject_unknown)
    journal_to_parquet(journal, output)
    return written


def pending_inputs(predictor, inputs, output: Path) -> tuple[dict, list[str]]:
    """The inputs read for scoring (key: payload) and the keys not yet in ``output``."""
    cases = modality_of(predictor).read_files(inputs, predictor.data_config)
    done = scored_inputs(output)
    todo = [key for key in cases if key not in done]
    if done:
        logger.info("Resuming: %d of %d inputs already scored in %s", len(done), len(cases), output)
    return cases, todo


def output_fields(predictor) -> list[str]:
    """The columns of a batch scoring output, in order."""
    return ["input", "predicted", "confidence", *[f"p_{c}" for c in predictor.classes],
            "prediction_set", "ood_score", "unknown", "error"]


def scored_inputs(output: Path) -> set[str]:
    """The inputs already in a finished CSV or Parquet output (none when it does not exist)."""
    if output.suffix.lower() == ".parquet":
        if not output.is_file():
            return set()
        import pandas as pd

        return set(pd.read_parquet(output, columns=["input"])["input"].astype(str))
    return _completed(output)


def journal_to_parquet(journal: Path, output: Path) -> None:
    """Write the CSV ``journal`` as the Parquet file ``output`` (atomically) and remove it."""
    import pandas as pd

    table = pd.read_csv(journal, dtype={"input": str, "predicted": str, "prediction_set": str,
                                        "unknown": str, "error": str},
                        keep_default_na=False, na_values={"confidence": [""], "ood_score": [""]})
    for column in [c for c in table.columns if c.startswith("p_") or c in ("confidence", "ood_score")]:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    atomic_write(output, lambda tmp: table.to_parquet(tmp, index=False))
    journal.unlink()
