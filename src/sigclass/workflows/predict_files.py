"""Batch scoring (``sigclass predict``): many inputs to a CSV, Parquet or JSON file, streamed
chunk by chunk, resumable after a crash.

Rows are appended and flushed after every chunk. A Parquet or JSON output is written through a
CSV journal next to it (``<output>.partial.csv``) that becomes the output, atomically, once
every input is scored; an interrupted run leaves the journal, and the next run resumes from it.
On a restart the inputs already in the output are skipped, and a last line cut off by the crash
is dropped first (for outputs with several rows per input, such as boxes, the last input's rows
too, as they may be incomplete), so no input is scored twice and none is lost. An input that
cannot be read gets a row with its error instead of stopping the batch (the command still exits
0): a file that is not a regular file (a named pipe, a link to a device) or is over 512 MB is
refused from ``os.stat`` before it is opened, so scoring never blocks on it. A path that does
not exist stops the command before anything is scored. :func:`stream_rows` is the machinery,
shared by classifiers (:func:`predict_files`) and detectors
(:func:`~sigclass.workflows.detect.predict_box_files`).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .._utils import atomic_write
from ..evaluation.ood import score_records
from ..exceptions import ConfigError, DataError
from ..modalities import modality_of
from ..predictor import require_ood

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowFormat:
    """The rows of a batch scoring output: their columns and how they are read back.

    Attributes:
        fields: The columns, in order.
        key: The column naming the input a row belongs to (what a resumed run skips).
        text: Columns kept as text (``""`` when empty); every other column is numeric, empty
            where it has no value (null in Parquet and JSON).
        nullable: Text columns that are null in Parquet and JSON when empty.
        grouped: An input may have several rows (one per box): the rows of the last input of an
            interrupted output may be incomplete, so a resumed run scores that input again.
    """

    fields: tuple[str, ...]
    key: str = "input"
    text: tuple[str, ...] = ()
    nullable: tuple[str, ...] = ()
    grouped: bool = False


class Streamed(NamedTuple):
    """What one :func:`stream_rows` call wrote: inputs scored, rows, inputs with an error."""

    inputs: int
    rows: int
    failed: int


#: Outputs written through a CSV journal and converted once complete, by file suffix.
JOURNALED = (".parquet", ".json", ".jsonl")


def _completed(output: Path, form: RowFormat) -> set[str]:
    """Inputs already scored in ``output``; a partial last line is cut off first, and with a
    ``grouped`` format the rows of the last input too (they may be incomplete)."""
    if not output.is_file():
        return set()
    data = output.read_bytes()
    if b"\n" in data:  # a complete header: the columns of this model's rows, or refused
        first = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
        header = tuple(next(csv.reader([first])))
        if header != form.fields:
            raise ConfigError(f"Cannot add to '{output}': its columns {list(header)} are not "
                              f"those of this model's output {list(form.fields)}. Write to "
                              "another --output (or delete this one to score everything again).")
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(output, "r+b") as handle:
            handle.truncate(cut)
        logger.warning("Dropped a partial last line of %s (interrupted write)", output)
    with open(output, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if form.grouped and rows:
        last = rows[-1][form.key]
        kept = [row for row in rows if row[form.key] != last]

        def rewrite(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=form.fields)
                writer.writeheader()
                writer.writerows(kept)

        atomic_write(output, rewrite)
        rows = kept
    return {row[form.key] for row in rows}


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for begin in range(0, len(items), size):
        yield items[begin:begin + size]


def predict_files(predictor, inputs: Iterable[str | Path], output: str | Path,
                  batch_size: int = 64, progress: bool = True, reject_unknown: bool = False) -> int:
    """Score image files, or the cases of signal files, into a CSV, Parquet or JSON file
    (``input, predicted, confidence, p_<class>..., prediction_set, ood_score, unknown, error``).

    ``prediction_set`` is the row's conformal prediction set, its classes joined by ``|``, most
    probable first (empty for a model saved without a threshold, and for an ensemble).
    ``ood_score`` is how far the input is from the training data and ``unknown`` (``true`` or
    ``false``) whether it is above the model's threshold (both empty for a model saved without
    OOD data); with ``reject_unknown`` an unknown input's ``predicted`` is empty.

    A signal file gives one row per case, its input named ``<file>#<case id>``; the file is read
    with the model's reading options (windowing, columns). The output format follows the suffix
    (see :func:`stream_rows`).

    Returns:
        The number of rows written by this call.
    """
    output = Path(output)
    if reject_unknown:
        require_ood(predictor)
    form = output_format(predictor)
    cases = modality_of(predictor).read_files(inputs, predictor.data_config)

    def rows_of(chunk: list[str]) -> list[dict]:
        return score_rows(predictor, chunk, batch_size, cases, reject_unknown)

    return stream_rows(output, list(cases), form, rows_of, batch_size, progress).inputs


def stream_rows(output: str | Path, keys: list[str], form: RowFormat,
                rows_of: Callable[[list[str]], list[dict]], chunk_size: int,
                progress: bool = True, unit: str = "item") -> Streamed:
    """Write the rows of the inputs ``keys`` not yet in ``output``, chunk by chunk; the
    machinery of every batch scoring output (classes, boxes).

    The format follows the suffix: ``.csv`` (and any other suffix) is appended to and flushed
    after every chunk; ``.parquet``, ``.json`` (an array of records) and ``.jsonl`` (JSON Lines)
    are streamed into a CSV journal (:func:`journal_path`) that becomes the output, atomically,
    once every input is written. An existing output (or journal) is resumed: its inputs are
    skipped, and rows of new inputs are added to it.

    Args:
        output: The output file.
        keys: Every input, in order.
        form: The columns and how they are read back.
        rows_of: The rows of a chunk of inputs (each row names its input in ``form.key``; a row
            whose ``error`` is not empty is an input that could not be scored).
        chunk_size: Inputs scored and written at a time.
        progress: Show a progress bar.
        unit: What the progress bar counts.

    Returns:
        What this call wrote (:class:`Streamed`).
    """
    output = Path(output)
    if output.suffix.lower() in JOURNALED:
        journal = journal_path(output)
        if output.is_file() and not journal.is_file():
            # a finished output: carry its rows over, so that new inputs are added to them
            _read_table(output).reindex(columns=list(form.fields)).to_csv(journal, index=False)
        done = stream_rows(journal, keys, form, rows_of, chunk_size, progress, unit)
        journal_to_table(journal, output, form)
        return done
    scored = _completed(output, form)
    todo = [key for key in keys if key not in scored]
    if scored:
        logger.info("Resuming: %d of %d inputs already scored in %s", len(set(keys) & scored),
                    len(keys), output)
    output.parent.mkdir(parents=True, exist_ok=True)
    new_file = not output.is_file() or output.stat().st_size == 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="predict", unit=unit)
    rows = 0
    failed: set[str] = set()
    with open(output, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=form.fields)
        if new_file:
            writer.writeheader()
        for chunk in _chunks(todo, chunk_size):
            for row in rows_of(chunk):
                writer.writerow(row)
                rows += 1
                if row.get("error"):
                    failed.add(row[form.key])
            handle.flush()
            os.fsync(handle.fileno())
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    if failed:
        logger.warning("%d of %d input(s) could not be scored; their rows give the reason in the "
                       "'error' column", len(failed), len(todo))
    return Streamed(len(todo), rows, len(failed))


def rows_or_errors(chunk: list[str], rows_of: Callable[[list[str]], list[dict]],
                   key: str = "input") -> list[dict]:
    """``rows_of(chunk)``; when it raises :class:`DataError`, the inputs are scored one by one
    and each bad one gets a row with its error (its other columns empty)."""
    try:
        return rows_of(chunk)
    except DataError:
        rows = []
        for item in chunk:
            try:
                rows += rows_of([item])
            except DataError as exc:
                rows.append({key: item, "error": str(exc)})
        return rows


def score_rows(predictor, chunk: list[str], batch_size: int, cases: dict,
               reject_unknown: bool = False) -> list[dict]:
    """The output rows of the inputs ``chunk`` (keys of ``cases``, their payloads); an input
    that cannot be read gets a row with its error and the others are scored normally. With
    ``reject_unknown`` an unknown input's ``predicted`` is empty."""
    def rows_of(keys: list[str]) -> list[dict]:
        proba, ood = predictor.proba_and_ood([cases[k] for k in keys], batch_size=batch_size)
        records = score_records(predictor, proba, ood, reject_unknown)
        return [_row(item, r) for item, r in zip(keys, records, strict=True)]

    return rows_or_errors(chunk, rows_of)


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
    """The CSV a Parquet or JSON output is streamed into until it is complete."""
    return output.with_name(output.name + ".partial.csv")


def pending_inputs(predictor, inputs, output: Path) -> tuple[dict, list[str]]:
    """The inputs read for scoring (key: payload) and the keys not yet in ``output``."""
    cases = modality_of(predictor).read_files(inputs, predictor.data_config)
    done = scored_inputs(output, output_format(predictor))
    todo = [key for key in cases if key not in done]
    if done:
        logger.info("Resuming: %d of %d inputs already scored in %s", len(done), len(cases), output)
    return cases, todo


def output_fields(predictor) -> list[str]:
    """The columns of a batch scoring output, in order."""
    return ["input", "predicted", "confidence", *[f"p_{c}" for c in predictor.classes],
            "prediction_set", "ood_score", "unknown", "error"]


def output_format(predictor) -> RowFormat:
    """The rows of a classifier's batch scoring output: one per input."""
    return RowFormat(tuple(output_fields(predictor)), "input",
                     text=("input", "predicted", "prediction_set", "unknown", "error"))


def scored_inputs(output: Path, form: RowFormat | None = None) -> set[str]:
    """The inputs already in a finished CSV, Parquet or JSON output (none when it does not
    exist); ``form`` (a classifier's by default) names the input column."""
    key = form.key if form else "input"
    if not output.is_file():
        return set()
    if output.suffix.lower() in JOURNALED:
        return set(_read_table(output)[key].astype(str))
    if form is None:
        with open(output, newline="", encoding="utf-8") as handle:
            form = RowFormat(tuple(csv.DictReader(handle).fieldnames or ()))
    return _completed(output, form)


def _read_table(output: Path):
    """A finished Parquet or JSON output as a DataFrame (values as written)."""
    import pandas as pd

    suffix = output.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(output)
    return pd.read_json(output, orient="records", lines=suffix == ".jsonl", dtype=False,
                        convert_dates=False)


def journal_to_table(journal: Path, output: Path, form: RowFormat) -> None:
    """Write the CSV ``journal`` as the Parquet or JSON file ``output`` (atomically, typed as
    ``form`` says) and remove it."""
    import pandas as pd

    table = pd.read_csv(journal, dtype={c: str for c in (*form.text, *form.nullable)},
                        keep_default_na=False)
    for column in table.columns:
        if column in form.nullable:
            table[column] = table[column].astype(object).where(table[column] != "", None)
        elif column not in form.text:
            table[column] = pd.to_numeric(table[column], errors="coerce")
    suffix = output.suffix.lower()
    if suffix == ".parquet":
        atomic_write(output, lambda tmp: table.to_parquet(tmp, index=False))
    else:
        lines = suffix == ".jsonl"
        atomic_write(output, lambda tmp: table.to_json(tmp, orient="records", lines=lines,
                                                       force_ascii=False, indent=None))
    journal.unlink()


def journal_to_parquet(journal: Path, output: Path) -> None:
    """Write a classifier's CSV ``journal`` as the Parquet file ``output`` and remove it."""
    with open(journal, newline="", encoding="utf-8") as handle:
        fields = tuple(csv.DictReader(handle).fieldnames or ())
    form = RowFormat(fields, text=("input", "predicted", "prediction_set", "unknown", "error"))
    journal_to_table(journal, output, form)
