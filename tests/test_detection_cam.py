"""Maps of detected boxes (tiny BCCD detector, 1 epoch): one map per box, of the image's size,
finite, in [0, 1] and zero outside its box, for the very boxes and scores the detector returns;
the CLI's overlay and map files; `explain=true` in the service, over real HTTP."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

import sigclass
from detection_models import needs_bccd, train_detection_model
from servers import running_server
from sigclass.exceptions import ExplainError

pytestmark = needs_bccd


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_detection_model(tmp_path_factory.mktemp("detect-cam"))


@pytest.fixture(scope="module")
def images(run) -> list[Path]:
    return sorted((run.parent / "bccd" / "JPEGImages").glob("*.jpg"))[:2]


def _check_maps(explained, shape):
    for entry in explained:
        for values in (entry.map, entry.full_map):
            assert values.shape == shape and values.dtype == np.float32
            assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
        assert entry.map.max() in (0.0, 1.0)  # divided by its maximum inside the box
        x0, y0, x1, y1 = entry.pixel_box()
        outside = entry.map.copy()
        outside[y0:y1, x0:x1] = 0
        assert not outside.any()  # restricted to the box
        assert 0 <= entry.mass_inside <= 1
        inside = entry.full_map[y0:y1, x0:x1].sum() / max(entry.full_map.sum(), 1e-12)
        assert entry.mass_inside == pytest.approx(inside, abs=1e-5)


def test_one_map_per_box_for_the_detectors_own_boxes(run, images):
    detector = sigclass.load(run / "model", device="cpu")
    expected = detector.predict_boxes(images, score_threshold=0.0, max_detections=4)
    explained = detector.explain_boxes(images, score_threshold=0.0, max_detections=4)
    assert len(explained) == len(images)
    for found, boxes in zip(expected, explained, strict=True):
        assert len(boxes) == len(found["boxes"]) > 0
        np.testing.assert_allclose(np.stack([b.box for b in boxes]), found["boxes"], atol=1e-3)
        np.testing.assert_allclose([b.score for b in boxes], found["scores"], atol=1e-5)
        assert [b.label for b in boxes] == list(found["labels"])
        _check_maps(boxes, (120, 160))
    assert any(b.map.max() == 1.0 for boxes in explained for b in boxes)  # not all empty
    assert {b.method for boxes in explained for b in boxes} == {"layercam"}  # the default
    layer = detector.explain_boxes(images[:1], 0.0, 2, method="gradcam", stage=1)[0]
    assert [b.method for b in layer] == ["gradcam", "gradcam"]
    _check_maps(layer, (120, 160))
    with pytest.raises(ExplainError, match="must be one of layercam, gradcam"):
        detector.explain_boxes(images[:1], method="cam")
    with pytest.raises(ExplainError, match="feature stage must be in 0-2"):
        detector.explain_boxes(images[:1], stage=5)


def test_retinanet_is_refused_clearly():
    from sigclass.explain.boxes import explain_boxes
    from sigclass.models.detection import build_detector

    network = build_detector(2, arch="retinanet", pretrained=False, image_size=64)
    with pytest.raises(ExplainError, match="is not a Faster R-CNN detector"):
        explain_boxes(network, ["a", "b"], [np.zeros((3, 8, 8))])


def test_cli_writes_an_overlay_and_the_maps_per_image(run, images, tmp_path):
    from PIL import Image

    from sigclass.cli import main

    out = tmp_path / "maps"
    assert main(["explain", str(run), str(images[0]), "--out", str(out), "--score-threshold", "0",
                 "--max-detections", "3"]) == 0
    [summary] = json.loads((out / "explanations.json").read_text())
    assert len(summary["boxes"]) == 3
    assert {"xmin", "class", "score", "mass_inside", "map_box"} <= set(summary["boxes"][0])
    maps = np.load(out / summary["maps"])
    assert maps.shape == (3, 120, 160) and np.isfinite(maps).all()
    with Image.open(out / summary["png"]) as overlay:
        assert overlay.size == (160, 120)


def test_service_explain_returns_a_map_per_box(run, images):
    from PIL import Image

    with running_server(run / "model", "--device", "cpu") as (base, _):
        response = httpx.post(base + "/predict?explain=true&score_threshold=0&max_detections=3",
                              files={"file": (images[0].name, images[0].read_bytes())}, timeout=120)
        plain = httpx.post(base + "/predict?score_threshold=0&max_detections=3",
                           files={"file": (images[0].name, images[0].read_bytes())},
                           timeout=120).json()
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["boxes"]) == 3
    for box, same in zip(body["boxes"], plain["boxes"], strict=True):
        assert box["score"] == pytest.approx(same["score"], abs=1e-5) and same["explanation"] is None
        explanation = box["explanation"]
        assert explanation["target"] == box["class"] and explanation["method"] == "layercam"
        x0, y0, x1, y1 = explanation["map_box"]
        values = np.array(explanation["map"])
        assert values.shape == (y1 - y0, x1 - x0)
        assert values.min() >= 0 and values.max() <= 1 and 0 <= explanation["mass_inside"] <= 1
    png = base64.b64decode(body["explanation"]["overlay_png_base64"])
    with Image.open(io.BytesIO(png)) as overlay:
        assert overlay.size == (160, 120)
    assert plain["explanation"] is None
