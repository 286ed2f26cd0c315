"""Batch scoring on Apache Spark (``sigclass predict --engine spark``).

The driver lists the inputs as the local path does (:func:`~sigclass.workflows.predict_files.predict_files`:
image paths, or the cases of signal files read with the model's reading options) and cuts them,
in order, into partitions. The model folder's files are broadcast once; each executor process
writes them to a temporary folder and loads the model once, then scores its partitions in
pandas batches (``groupBy(part).applyInPandas``), each partition written atomically to
``<output>.spark-parts/part-NNNNN.csv``. When every partition is there, the driver joins them,
in input order, into the output (CSV or Parquet, the same columns as the local path) and removes
the parts.

An interrupted job resumes by partition: the plan (which inputs go in which partition, and the
model's checksum) is saved first, and a rerun with the same inputs scores only the partitions
that have no file yet. Inputs already in a finished output are skipped, as locally.

Images are read by the executors from their paths, so on a cluster the paths must be readable
there (a shared file system: DBFS, ABFS or NFS mounts); signal cases travel in the job as
``.npy`` bytes. sigclass must be installed on the executors (same version as the driver).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write, write_json
from ..exceptions import ConfigError, EngineError
from ..loading import load, model_folder
from .predict_files import (
    journal_path,
    journal_to_parquet,
    output_fields,
    pending_inputs,
    score_rows,
)

logger = logging.getLogger(__name__)

PARTS = ".spark-parts"
PLAN = "plan.json"
MIN_PART_ITEMS = 16  # fewer inputs than this per partition cost more in task start-up than they save
_MODELS: dict[str, Any] = {}  # the executor process's loaded model, by checksum


def predict_spark(model: str | Path, inputs: Iterable[str | Path], output: str | Path,
                  batch_size: int = 64, partitions: int | None = None, master: str | None = None,
                  backend: str = "auto", precision: str = "fp32") -> int:
    """Score files like :func:`~sigclass.workflows.predict_files.predict_files`, on Spark.

    Args:
        model: Run folder, model folder or ``models:/NAME@ALIAS``.
        inputs: Image files or folders; signal files.
        output: ``.csv`` or ``.parquet`` file.
        batch_size: Inputs per model call on an executor.
        partitions: Spark partitions of the inputs (default: twice the session's default
            parallelism, with at least 16 inputs each).
        master: Spark master URL; ``None`` takes the one ``spark-submit`` or the Spark
            configuration sets, else ``local[*]``.
        backend: Inference engine on the executors (``torch``, ``onnx`` or ``auto``).
        precision: ``fp32`` or ``int8`` (the ONNX engine's quantized graph).

    Returns:
        The number of rows written by this call.

    Raises:
        ConfigError: PySpark or a Java runtime is missing, or the parts of an interrupted job
            over other inputs or another model are in the way.
    """
    if Path(output).suffix.lower() in (".json", ".jsonl"):
        raise ConfigError(f"--engine spark writes a .csv or .parquet output, not '{output}'. "
                          "Choose one of those, or score with the local engine.")
    _check_spark()
    folder = model_folder(model)
    predictor = load(folder)
    if getattr(predictor, "task", "classification") == "detection":
        raise ConfigError(f"'{model}' is a detection model: --engine spark scores classification "
                          "models. Score it with the local engine (drop --engine spark).")
    output = Path(output)
    cases, todo = pending_inputs(predictor, inputs, output)
    if not todo:
        return 0
    files = _model_files(folder)
    checksum = _checksum(files)
    parts_dir = output.with_name(output.name + PARTS)
    spark = _session(master)
    plan = _plan(parts_dir, todo, checksum, partitions or _default_partitions(spark, len(todo)))
    remaining = [p for p, keys in enumerate(plan) if not _part_file(parts_dir, p).is_file()]
    if len(remaining) < len(plan):
        logger.info("Resuming: %d of %d partitions already scored", len(plan) - len(remaining), len(plan))
    if remaining:
        fields = output_fields(predictor)
        shared = spark.sparkContext.broadcast(files)
        rows = [(p, position, key, *_encode(cases[key]))
                for p in remaining for position, key in enumerate(plan[p])]
        frame = spark.createDataFrame(
            rows, schema="part int, position int, input string, path string, npy binary, error string")
        score = functools.partial(_score_part, shared, checksum, fields, str(parts_dir),
                                  batch_size, backend, precision)
        try:
            frame.repartition(len(remaining), "part").groupBy("part").applyInPandas(
                score, schema="part int, n long").collect()
        except Exception as exc:  # noqa: BLE001 - Py4J and Spark errors have no common base
            finished = sum(_part_file(parts_dir, p).is_file() for p in range(len(plan)))
            reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), repr(exc))
            raise EngineError(f"the Spark job failed ({reason[:500]}); {finished} of {len(plan)} "
                              f"partitions are scored and kept in '{parts_dir}': run the same "
                              "command again to score the others") from exc
        finally:
            shared.unpersist()
    _assemble(output, parts_dir, len(plan), output_fields(predictor))
    return len(todo)


def _check_spark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise ConfigError("--engine spark needs PySpark: pip install 'sigclass[spark]' "
                          "(and a Java runtime 17 or newer)") from exc
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").is_file()) and not shutil.which("java"):
        raise ConfigError("--engine spark needs a Java runtime (17 or newer) and none was found: "
                          "install one (Debian: apt-get install default-jre-headless) or set "
                          "JAVA_HOME")


def _session(master: str | None):
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("sigclass predict")
    if master:
        builder = builder.master(master)
    elif not SparkConf().contains("spark.master"):
        builder = builder.master("local[*]")
    spark = builder.config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _default_partitions(spark, n_inputs: int) -> int:
    wanted = 2 * spark.sparkContext.defaultParallelism
    return max(1, min(wanted, math.ceil(n_inputs / MIN_PART_ITEMS)))


def _model_files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _checksum(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _plan(parts_dir: Path, todo: list[str], checksum: str, partitions: int) -> list[list[str]]:
    """The inputs of each partition: an interrupted job's plan when it covers the same inputs
    and model, a new one (saved before anything is scored) otherwise."""
    plan_file = parts_dir / PLAN
    if plan_file.is_file():
        saved = json.loads(plan_file.read_text())
        if saved.get("model") != checksum or [k for p in saved["parts"] for k in p] != todo:
            raise ConfigError(f"'{parts_dir}' holds the partitions of an interrupted job over other "
                              "inputs or another model; run that job again to finish it, or "
                              "delete the folder to start over")
        return saved["parts"]
    size = math.ceil(len(todo) / max(1, min(partitions, len(todo))))
    parts = [todo[begin:begin + size] for begin in range(0, len(todo), size)]
    parts_dir.mkdir(parents=True, exist_ok=True)
    write_json(plan_file, {"model": checksum, "parts": parts})
    return parts


def _part_file(parts_dir: Path, part: int) -> Path:
    return parts_dir / f"part-{part:05d}.csv"


def _encode(payload: Any) -> tuple[str | None, bytes | None, str | None]:
    """A case as the job's columns: an image's path, a signal's ``.npy`` bytes, or the reason
    it cannot be read."""
    if isinstance(payload, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, payload, allow_pickle=False)
        return None, buffer.getvalue(), None
    if isinstance(payload, Exception):
        return None, None, str(payload)
    return str(payload), None, None


def _decode(row) -> Any:
    if isinstance(row.npy, bytes | bytearray):
        return np.load(io.BytesIO(row.npy), allow_pickle=False)
    return Path(row.path)


def _executor_model(shared, checksum: str, backend: str, precision: str):
    """The model on this executor process, loaded from the broadcast files once."""
    if checksum not in _MODELS:
        folder = Path(tempfile.mkdtemp(prefix="sigclass-model-"))
        for name, data in shared.value.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        predictor = load(folder)
        if backend != "torch" or precision != "fp32":
            predictor.use_backend(backend, precision=precision)
        _MODELS.clear()
        _MODELS[checksum] = predictor
    return _MODELS[checksum]


def _score_part(shared, checksum: str, fields: list[str], parts_dir: str, batch_size: int,
                backend: str, precision: str, frame):
    """Score one partition's inputs (a pandas frame) into its part file."""
    import pandas as pd

    predictor = _executor_model(shared, checksum, backend, precision)
    frame = frame.sort_values("position")
    part = int(frame["part"].iloc[0])
    rows: list[dict] = []
    # an input the driver could not read carries its reason (null, which pandas shows as NaN,
    # for the others)
    errors = {key: e if isinstance(e, str) else "" for key, e in zip(frame["input"], frame["error"],
                                                                      strict=True)}
    cases = {r.input: _decode(r) for r in frame.itertuples() if not errors[r.input]}
    keys = list(frame["input"])
    for begin in range(0, len(keys), batch_size):
        chunk = keys[begin:begin + batch_size]
        readable = [k for k in chunk if not errors[k]]
        scored = {row["input"]: row for row in score_rows(predictor, readable, batch_size, cases)} \
            if readable else {}
        rows.extend(scored[k] if k in scored else {"input": k, "error": errors[k]} for k in chunk)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(_part_file(Path(parts_dir), part), write)
    return pd.DataFrame({"part": [part], "n": [len(rows)]})


def _assemble(output: Path, parts_dir: Path, n_parts: int, fields: list[str]) -> None:
    """Join the part files, in input order, after the rows of an earlier finished output."""
    parquet = output.suffix.lower() == ".parquet"
    target = journal_path(output) if parquet else output
    if parquet and output.is_file():
        import pandas as pd

        pd.read_parquet(output).to_csv(target, index=False)

    def write(tmp: Path) -> None:
        if target.is_file():
            shutil.copyfile(target, tmp)
        with open(tmp, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            if tmp.stat().st_size == 0:
                writer.writeheader()
            for part in range(n_parts):
                with open(_part_file(parts_dir, part), newline="") as source:
                    writer.writerows(csv.DictReader(source))

    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, write)
    if parquet:
        journal_to_parquet(target, output)
    shutil.rmtree(parts_dir)
