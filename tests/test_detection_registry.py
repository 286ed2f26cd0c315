"""A detector in the MLflow registry, against a real SQLite store in a temporary folder: the
training run logs the model, `sigclass register --alias` versions it, `models:/NAME@ALIAS`
loads it (`sigclass.load`, `sigclass predict`, `sigclass serve`) and its MLflow pyfunc gives one
row per box."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import sigclass
from detection_models import needs_bccd, tiny_bccd
from servers import running_server
from sigclass.cli import main
from sigclass.detector import DetectionPredictor

pytestmark = needs_bccd


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A tiny detector trained with tracking on; (run folder, tracking URI)."""
    base = tmp_path_factory.mktemp("detect-registry")
    uri = f"sqlite:///{(base / 'mlflow.db').as_posix()}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGCLASS_TRACKING", "on")
        data = tiny_bccd(base / "bccd")
        code = main(["train", str(data), "--out", str(base / "run"), "--epochs", "1",
                     "--image-size", "96", "--batch-size", "4", "--set", f"tracking.uri={uri}", "-q"])
    assert code == 0
    return base / "run", uri


@pytest.fixture
def store(recorded, monkeypatch):
    """The recorded run, its store being the one `models:/` URIs are looked up in."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", recorded[1])
    return recorded


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _images(run: Path) -> list[str]:
    return sorted(str(p) for p in (run.parent / "bccd" / "JPEGImages").glob("*.jpg"))[:3]


def test_training_logs_the_detector_as_a_model(store):
    run, uri = store
    run_id = json.loads((run / "tracking.json").read_text())["run_id"]
    record = _client(uri).get_run(run_id)
    assert record.info.status == "FINISHED"
    assert record.data.tags["sigclass.task"] == "detection"
    assert record.data.tags["sigclass.model_artifact"] == "model"
    metrics = json.loads((run / "metrics.json").read_text())
    assert record.data.metrics["test_map_50"] == pytest.approx(metrics["map_50"])
    files = {item.path for item in _client(uri).list_artifacts(run_id)}
    assert {"metrics.json", "split.json", "history.json", "model"} <= files
    assert "checkpoints" not in files
    history = _client(uri).get_metric_history(run_id, "val_map")
    assert [m.step for m in history] == [1]


def test_register_alias_load_and_predict_by_name(store, tmp_path, capsys):
    run, uri = store
    assert main(["register", str(run), "--name", "cells", "--alias", "champion",
                 "--tracking-uri", uri]) == 0
    assert "alias champion -> version 1" in capsys.readouterr().out
    from sigclass.tracking import list_versions

    (row,) = list_versions("cells", uri)
    assert row["task"] == "detection" and row["mode"] == "detection" and "test_map" in row
    local = sigclass.load(run, device="cpu")
    loaded = sigclass.load("models:/cells@champion", device="cpu")
    assert isinstance(loaded, DetectionPredictor) and loaded.classes == local.classes
    images = _images(run)
    expected = local.predict_boxes(images, score_threshold=0.0, max_detections=10)
    got = loaded.predict_boxes(images, score_threshold=0.0, max_detections=10)
    assert sum(len(f["boxes"]) for f in expected) > 0
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
        np.testing.assert_array_equal(a["scores"], b["scores"])
    out = tmp_path / "boxes.parquet"
    assert main(["predict", "models:/cells@champion", *images, "-o", str(out),
                 "--score-threshold", "0", "--max-detections", "10", "-q"]) == 0
    assert len(pd.read_parquet(out)) == sum(len(f["boxes"]) for f in expected)


def test_pyfunc_gives_one_row_per_box(store):
    import mlflow.pyfunc

    from sigclass.exceptions import DataError

    run, uri = store
    assert main(["register", str(run), "--name", "cells-pyfunc", "--tracking-uri", uri]) == 0
    model = mlflow.pyfunc.load_model("models:/cells-pyfunc/1")
    images = _images(run)
    table = model.predict(pd.DataFrame({"path": images}),
                          params={"score_threshold": 0.0, "max_detections": 5})
    assert list(table.columns) == ["path", "xmin", "ymin", "xmax", "ymax", "label", "score"]
    expected = sigclass.load(run, device="cpu").predict_boxes(images, 0.0, 5)
    for path, found in zip(images, expected, strict=True):
        rows = table[table["path"] == path]
        assert len(rows) == len(found["boxes"])
        np.testing.assert_allclose(rows[["xmin", "ymin", "xmax", "ymax"]], found["boxes"], atol=0.006)
        assert list(rows["label"]) == list(found["labels"])
    from PIL import Image

    grey = run.parent / "grey.png"  # no box at a threshold of 1: one row, its box fields null
    Image.new("RGB", (160, 120), (128, 128, 128)).save(grey)
    none = model.predict(pd.DataFrame({"path": [str(grey)]}), params={"score_threshold": 1.0})
    assert len(none) == 1 and none.drop(columns="path").isna().all(axis=None)
    with pytest.raises(DataError, match="a detection model takes a 'path' column"):
        model.predict(pd.DataFrame({"image": ["aGVsbG8="]}))


def test_a_run_trained_without_tracking_registers_too(store):
    from sigclass.tracking import list_versions

    run, uri = store
    copy = run.parent / "untracked"
    shutil.copytree(run, copy)
    (copy / "tracking.json").unlink()
    assert main(["register", str(copy), "--name", "cells-late", "--tracking-uri", uri]) == 0
    (row,) = list_versions("cells-late", uri)
    assert row["task"] == "detection" and row["model"] == "efficientnet_lite0"
    loaded = sigclass.load("models:/cells-late/1", device="cpu")
    assert isinstance(loaded, DetectionPredictor)


def test_serve_takes_a_registered_detector(store):
    run, uri = store
    assert main(["register", str(run), "--name", "cells-serve", "--alias", "prod",
                 "--tracking-uri", uri]) == 0
    image = Path(_images(run)[0])
    with running_server("models:/cells-serve@prod", "--device", "cpu", "--backend", "torch",
                        env={"MLFLOW_TRACKING_URI": uri}) as (base, _):
        response = httpx.post(base + "/predict", params={"score_threshold": 0.0, "max_detections": 5},
                              files={"file": (image.name, image.read_bytes())}, timeout=120)
        assert response.status_code == 200, response.text
        body = response.json()
        meta = httpx.get(base + "/metadata", timeout=30).json()
    expected = sigclass.load(run, device="cpu").predict_boxes([image], 0.0, 5)[0]
    assert body["task"] == "detection"
    assert [b["class"] for b in body["boxes"]] == list(expected["labels"])
    np.testing.assert_allclose([b["score"] for b in body["boxes"]], expected["scores"], atol=1e-4)
    assert "cells-serve" in json.dumps(meta)
