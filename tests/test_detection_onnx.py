"""A detector on ONNX Runtime (tiny BCCD detector, 1 epoch): `sigclass export` writes the whole
detector as one graph, ONNX Runtime finds the boxes PyTorch finds (same labels, boxes and scores
within tolerance, in the image's own pixels) through the predictor, `sigclass predict` and the
service, and a damaged model folder or an int8 request is refused clearly."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

import sigclass
from detection_models import needs_bccd, train_detection_model
from servers import running_server
from sigclass.cli import main
from sigclass.detector_engine import compare_detections
from sigclass.exceptions import ConfigError

pytestmark = needs_bccd


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_detection_model(tmp_path_factory.mktemp("detect-onnx"))


@pytest.fixture(scope="module")
def images(run, tmp_path_factory) -> list[Path]:
    """Three BCCD images (160x120) and one enlarged to 200x150: inputs of different sizes."""
    from PIL import Image

    found = sorted((run.parent / "bccd" / "JPEGImages").glob("*.jpg"))[:3]
    bigger = tmp_path_factory.mktemp("images") / "bigger.png"
    Image.open(found[-1]).resize((200, 150)).save(bigger)
    return [*found, bigger]


@pytest.fixture(scope="module")
def graph(run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("graph") / "detector.onnx"
    assert main(["export", str(run), "--format", "onnx", "-o", str(out)]) == 0
    return out


def _same_boxes(expected: list[dict], got: list[dict]) -> int:
    """Assert that two engines' detections agree; returns the boxes compared."""
    compared = 0
    for one, other in zip(expected, got, strict=True):
        report = compare_detections(one, other, min_score=0.06)
        assert report["unmatched"] == 0, report
        assert report["max_box_diff"] < 0.5 and report["max_score_diff"] < 1e-3, report
        compared += report["n_boxes"]
    return compared


def test_onnx_runtime_finds_the_boxes_pytorch_finds(run, graph, images, capsys):
    assert graph.stat().st_size > 100_000
    expected = sigclass.load(run, device="cpu").predict_boxes(images, score_threshold=0.0)
    detector = sigclass.load(run, device="cpu").use_backend("onnx", graph)
    assert detector.backend == "onnx"
    got = detector.predict_boxes(images, score_threshold=0.0)
    assert _same_boxes(expected, got) > 0
    assert detector.use_backend("torch").backend == "torch"
    assert detector.resolve_backend("auto") == "onnx"  # the faster engine on a CPU
    with pytest.raises(ConfigError, match="runs in fp32 only"):
        detector.use_backend("onnx", precision="int8")


def test_predict_with_onnx_writes_the_torch_boxes_and_caches_the_graph(run, images, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("SIGCLASS_CACHE_DIR", str(tmp_path / "cache"))
    rows = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.csv"
        assert main(["predict", str(run), *map(str, images), "-o", str(out), "--backend", backend,
                     "--score-threshold", "0.1"]) == 0
        with open(out, newline="") as handle:
            rows[backend] = list(csv.DictReader(handle))
    assert len(rows["onnx"]) == len(rows["torch"]) > 0
    for a, b in zip(sorted(rows["torch"], key=lambda r: (r["path"], r["label"], r["xmin"])),
                    sorted(rows["onnx"], key=lambda r: (r["path"], r["label"], r["xmin"])), strict=True):
        assert a["path"] == b["path"] and a["label"] == b["label"]
        assert abs(float(a["xmin"]) - float(b["xmin"])) < 0.5
        assert abs(float(a["score"]) - float(b["score"])) < 1e-3
    assert len(list((tmp_path / "cache" / "onnx").glob("detector-*.onnx"))) == 1


def test_export_of_a_damaged_model_folder_is_refused(run, tmp_path, capsys):
    damaged = tmp_path / "model"
    shutil.copytree(run / "model", damaged)
    with open(damaged / "weights.safetensors", "ab") as handle:
        handle.write(b"\0")
    assert main(["export", str(damaged), "--format", "onnx", "-o", str(tmp_path / "x.onnx")]) == 2
    error = capsys.readouterr().err
    assert "weights.safetensors" in error and "does not match its recorded checksum" in error
    assert not (tmp_path / "x.onnx").exists()
    assert main(["serve", str(run / "model"), "--precision", "int8"]) == 2
    assert "runs in fp32 only" in capsys.readouterr().err


def test_the_service_answers_boxes_with_onnx_runtime(run, graph, images):
    detector = sigclass.load(run, device="cpu").use_backend("onnx", graph)
    with running_server(run / "model", "--device", "cpu", "--backend", "onnx",
                        env={"SIGCLASS_CACHE_DIR": str(graph.parent / "cache")}) as (base, _):
        assert httpx.get(base + "/metadata", timeout=30).json()["serving"]["backend"] == "onnx"
        image = images[-1]
        response = httpx.post(base + "/predict", params={"score_threshold": 0.0},
                              files={"file": (image.name, image.read_bytes())}, timeout=120)
    assert response.status_code == 200, response.text
    served = response.json()["boxes"]
    got = {"boxes": np.array([[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in served]).reshape(-1, 4),
           "labels": [b["class"] for b in served], "scores": np.array([b["score"] for b in served])}
    expected = detector.predict_boxes([image], score_threshold=0.0)
    assert _same_boxes(expected, [got]) > 0


def test_an_fcos_detector_exports_with_its_own_output_order(tmp_path):
    """FCOS (and RetinaNet) return boxes, scores, labels in that order: the graph names them so."""
    import torch

    from sigclass.detector_engine import check_graph, export_detector_onnx
    from sigclass.models.detection import build_detector

    torch.manual_seed(0)
    network = build_detector(3, arch="fcos", pretrained=False, image_size=64).eval()
    layer = network.head.classification_head.cls_logits  # scores spread above the threshold
    with torch.no_grad():
        torch.nn.init.normal_(layer.weight, std=0.05)
        layer.bias.fill_(-1.0)
    graph = export_detector_onnx(network, tmp_path / "fcos.onnx", (64, 85))
    report = check_graph(network, graph, 64, n_check=2)
    assert report["n_boxes"] > 0 and report["max_score_diff"] < 1e-4
