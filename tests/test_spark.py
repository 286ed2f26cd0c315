"""Batch scoring on Apache Spark (``sigclass predict --engine spark``): a real local Spark
session (``local[2]``) scores images and signals row for row like the local path, resumes an
interrupted job by partition, and says what is missing when PySpark or Java is absent."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from servers import train_image_model, train_signal_model

pytestmark = pytest.mark.slow


def _java() -> bool:
    home = os.environ.get("JAVA_HOME")
    return bool(shutil.which("java") or (home and Path(home, "bin", "java").is_file()))


def _pyspark() -> bool:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return False
    return True


needs_spark = pytest.mark.skipif(not (_java() and _pyspark()),
                                 reason="PySpark and a Java runtime are needed for a Spark session "
                                        "(scripts/setup.sh installs both)")


@pytest.fixture(scope="module")
def image_run(fridge, tmp_path_factory) -> Path:
    return train_image_model(fridge, tmp_path_factory.mktemp("spark-image"))


@pytest.fixture(scope="module")
def signal_run(tmp_path_factory) -> Path:
    return train_signal_model(tmp_path_factory.mktemp("spark-signal"))


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    from aeon.datasets import load_classification

    X, y = load_classification("BasicMotions", split="test")
    path = tmp_path_factory.mktemp("spark-data") / "cases.npz"
    np.savez(path, X=X[:24].astype(np.float32), y=y[:24])
    return path


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sigclass", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


def _table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, keep_default_na=False, dtype=str)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _same_rows(local: Path, spark: Path) -> None:
    a, b = _table(local), _table(spark)
    assert list(a.columns) == list(b.columns)
    assert list(a["input"]) == list(b["input"])  # the same rows, in the same order
    for column in a.columns:
        if column.startswith("p_") or column in ("confidence", "ood_score"):
            x = pd.to_numeric(a[column], errors="coerce").to_numpy(float)
            y = pd.to_numeric(b[column], errors="coerce").to_numpy(float)
            np.testing.assert_allclose(x, y, atol=1e-6)
        else:
            assert list(a[column].astype(str)) == list(b[column].astype(str)), column


@needs_spark
def test_spark_scores_images_like_the_local_path(image_run, tmp_path):
    data = image_run.parent / "data"
    (data / "can" / "broken.jpg").write_text("not an image")  # an error row on both paths
    local, spark = tmp_path / "local.csv", tmp_path / "spark.csv"
    done = _cli("predict", image_run, data, "-o", local, "--backend", "torch", "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    done = _cli("predict", image_run, data, "-o", spark, "--backend", "torch", "--engine", "spark",
                "--spark-master", "local[2]", "--partitions", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    _same_rows(local, spark)
    rows = _csv_rows(spark)
    assert len(rows) == 33 and sum(bool(r["error"]) for r in rows) == 1
    assert not (tmp_path / "spark.csv.spark-parts").exists()  # the parts are joined and removed


@needs_spark
def test_an_interrupted_spark_job_resumes_by_partition(signal_run, cases, tmp_path):
    local, spark = tmp_path / "local.parquet", tmp_path / "spark.parquet"
    done = _cli("predict", signal_run, cases, "-o", local, "--backend", "torch", "-q")
    assert done.returncode == 0, done.stderr[-3000:]
    parts = tmp_path / "spark.parquet.spark-parts"
    (parts / "part-00002.csv").mkdir(parents=True)  # partition 2 cannot be written: the job fails
    args = ("predict", signal_run, cases, "-o", spark, "--backend", "torch", "--engine", "spark",
            "--spark-master", "local[2]", "--partitions", "4")
    failed = _cli(*args)
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "run the same command again" in failed.stderr and not spark.exists()
    kept = sorted(p.name for p in parts.glob("part-*.csv") if p.is_file())
    assert kept == ["part-00000.csv", "part-00001.csv", "part-00003.csv"]
    # mark a finished partition: a resumed job must keep it, not score it again
    first = parts / "part-00000.csv"
    rows = _csv_rows(first)
    rows[0]["error"] = "kept from the first attempt"
    with open(first, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (parts / "part-00002.csv").rmdir()
    done = _cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    table = _table(spark)
    assert table.loc[0, "error"] == "kept from the first attempt"
    table.loc[0, "error"] = ""
    table.to_parquet(spark, index=False)
    _same_rows(local, spark)
    assert len(table) == 24 and not parts.exists()
    # a second run over the same inputs has nothing left to score
    again = _cli(*args)
    assert again.returncode == 0 and "0 predictions written" in again.stdout


def test_spark_without_java_says_what_to_install(signal_run, cases, tmp_path):
    env = {"PATH": str(Path(sys.executable).parent), "JAVA_HOME": ""}
    done = _cli("predict", signal_run, cases, "-o", tmp_path / "out.csv", "--engine", "spark", env=env)
    assert done.returncode == 2
    assert "Java runtime" in done.stderr and ("JAVA_HOME" in done.stderr or "PySpark" in done.stderr)
    assert not (tmp_path / "out.csv").exists()


def test_spark_options_need_the_spark_engine(signal_run, cases, tmp_path):
    done = _cli("predict", signal_run, cases, "-o", tmp_path / "out.csv", "--partitions", "4")
    assert done.returncode == 2 and "--engine spark" in done.stderr


UDF_JOB = """
import json, sys
import mlflow.pyfunc
from pyspark.sql import SparkSession
spark = SparkSession.builder.master("local[2]").getOrCreate()
model, paths = sys.argv[1], json.loads(sys.argv[2])
photos = spark.createDataFrame([(p,) for p in paths], "path string")
udf = mlflow.pyfunc.spark_udf(spark, model, env_manager="local", result_type=sys.argv[3])
rows = photos.withColumn("scores", udf("path")).select("path", "scores.*").toPandas()
print(rows.to_json(orient="records"))
spark.stop()
"""


@needs_spark
def test_the_pyfunc_model_scores_a_spark_table_with_spark_udf(image_run, tmp_path):
    """The README's ``mlflow.pyfunc.spark_udf`` path: a table with a column of image paths."""
    import json

    import sigclass as sc
    from sigclass.tracking.pyfunc import save_pyfunc

    predictor = sc.load(image_run)
    save_pyfunc(image_run / "model", tmp_path / "pyfunc")
    paths = [str(p) for p in sorted((image_run.parent / "data").rglob("*_1*.jpg"))][:6]
    schema = "label string, " + ", ".join(f"p_{c} double" for c in predictor.classes)
    done = subprocess.run([sys.executable, "-c", UDF_JOB, str(tmp_path / "pyfunc"), json.dumps(paths),
                           schema], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["path"] for r in rows] == paths
    proba = predictor.predict_proba(paths)
    np.testing.assert_allclose([[r[f"p_{c}"] for c in predictor.classes] for r in rows], proba,
                               atol=1e-5)
    assert [r["label"] for r in rows] == [predictor.classes[i] for i in proba.argmax(axis=1)]
