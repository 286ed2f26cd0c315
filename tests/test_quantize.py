"""INT8 quantization calibrated on the run's own data (``sigclass export --quantize int8``) and
its use by ``predict`` and ``serve`` (``--precision int8``), on a real FCN run of BasicMotions."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

import sigclass as sc
from servers import running_server, train_signal_model
from sigclass.exceptions import ConfigError
from sigclass.workflows.quantize import quantize_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("int8-cache")


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGCLASS_CACHE_DIR", str(cache))
        return train_signal_model(tmp_path_factory.mktemp("int8-run"))


@pytest.fixture(scope="module")
def quantized(run, cache, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``sigclass export RUN --quantize int8`` through the CLI."""
    graph = tmp_path_factory.mktemp("int8-out") / "model.int8.onnx"
    done = _cli(cache, "export", run, "--quantize", "int8", "-o", graph)
    assert done.returncode == 0, done.stderr[-3000:]
    return graph, done


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    from aeon.datasets import load_classification

    X, y = load_classification("BasicMotions", split="test")
    path = tmp_path_factory.mktemp("int8-data") / "cases.npz"
    np.savez(path, X=X.astype(np.float32), y=y)
    return path


def _cli(cache: Path, *args, extra_env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SIGCLASS_CACHE_DIR": str(cache), "OMP_WAIT_POLICY": "PASSIVE",
           **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "sigclass", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=env)


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as handle:
        return {row["input"]: row for row in csv.DictReader(handle)}


def test_the_int8_graph_is_quantized_and_reported(run, quantized):
    import onnx

    graph, done = quantized
    assert "int8 graph written to" in done.stdout and "items/s" in done.stdout
    ops = {node.op_type for node in onnx.load(str(graph)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: the weights are int8
    report = json.loads((run / "quantization.json").read_text())
    assert report["calibration_items"] > 0 and report["test_items"] == 40
    assert set(report["accuracy"]) == {"fp32", "int8"}
    assert report["accuracy_drop_points"] == pytest.approx(
        100 * (report["accuracy"]["fp32"] - report["accuracy"]["int8"]))
    assert report["accepted"] == (report["accuracy_drop_points"] <= report["max_accuracy_drop"])
    assert 0 < report["probability_difference"]["mean"] <= report["probability_difference"]["max"]
    assert report["items_per_second"]["int8"] > 0 and report["items_per_second"]["fp32"] > 0


def test_predict_with_int8_agrees_with_fp32(run, quantized, cache, cases, tmp_path):
    fp32 = _cli(cache, "predict", run, cases, "-o", tmp_path / "fp32.csv", "-q")
    int8 = _cli(cache, "predict", run, cases, "-o", tmp_path / "int8.csv", "--precision", "int8", "-q")
    assert fp32.returncode == 0 and int8.returncode == 0, (fp32.stderr[-2000:], int8.stderr[-2000:])
    a, b = _rows(tmp_path / "fp32.csv"), _rows(tmp_path / "int8.csv")
    assert a.keys() == b.keys() and len(a) == 40
    agree = np.mean([a[k]["predicted"] == b[k]["predicted"] for k in a])
    assert agree >= 0.9, f"int8 and fp32 agree on only {agree:.0%} of the cases"
    classes = [c for c in next(iter(a.values())) if c.startswith("p_")]
    diff = max(abs(float(a[k][c]) - float(b[k][c])) for k in a for c in classes)
    assert 0 < diff < 0.1  # a different graph, close probabilities


def test_a_graph_that_failed_its_accuracy_check_is_refused(run, quantized, cache, cases, tmp_path):
    predictor = sc.load(run)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGCLASS_CACHE_DIR", str(cache))
        from sigclass.predictor import quantized_paths

        _, report_path = quantized_paths(predictor)
    saved = report_path.read_text()
    report = json.loads(saved)
    report.update(accepted=False, accuracy_drop_points=7.5)
    report_path.write_text(json.dumps(report))
    try:
        done = _cli(cache, "predict", run, cases, "-o", tmp_path / "out.csv", "--precision", "int8")
        assert done.returncode == 2, done.stderr[-2000:]
        assert "loses 7.5 accuracy points" in done.stderr and "--precision fp32" in done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "out.csv").exists()
    finally:
        report_path.write_text(saved)


def test_int8_without_a_graph_says_how_to_make_one(run, cases, tmp_path):
    done = _cli(tmp_path / "empty-cache", "predict", run, cases, "-o", tmp_path / "out.csv",
                "--precision", "int8")
    assert done.returncode == 2 and "has no int8 graph yet" in done.stderr
    assert "sigclass export" in done.stderr and "--quantize int8" in done.stderr


def test_quantizing_needs_the_runs_own_data(run, tmp_path):
    lone = shutil.copytree(run / "model", tmp_path / "lone-model")
    with pytest.raises(ConfigError, match="int8 calibration needs the run's own data"):
        quantize_model(lone)
    for bad in ({"n_calibration": 0}, {"max_accuracy_drop": -1}, {"calibration_method": "mean"}):
        with pytest.raises(ConfigError, match="option"):
            quantize_model(run, **bad)


def test_the_service_serves_the_int8_graph(run, quantized, cache):
    from aeon.datasets import load_classification

    X, y = load_classification("BasicMotions", split="test")
    with running_server(run, "--precision", "int8", env={"SIGCLASS_CACHE_DIR": str(cache)}) as (base, _):
        serving = httpx.get(base + "/metadata", timeout=10).json()["serving"]
        assert serving["precision"] == "int8" and serving["backend"] == "onnx"
        answer = httpx.post(base + "/predict", json=X[0].tolist(), timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["class"] in {str(c) for c in set(y)}


def test_histogram_calibration_methods_quantize(run, cache):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGCLASS_CACHE_DIR", str(cache))
        report = quantize_model(run, n_calibration=20, batch_size=8,
                                calibration_method="entropy")  # batches of 8, 8 and 4
    assert report["calibration_method"] == "entropy" and report["calibration_items"] == 20
    assert report["accuracy"]["int8"] > 0.5
