"""`sigclass serve` on a detection model (tiny BCCD detector, 1 epoch), over real HTTP: boxes in
the upload's own pixels equal to DetectionPredictor's, the task in /metadata and the OpenAPI
document, and clear refusals (bad options, a target class, files that are not images)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

import sigclass
from detection_models import needs_bccd, train_detection_model
from servers import running_server

pytestmark = needs_bccd


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_detection_model(tmp_path_factory.mktemp("detect-serve"))


@pytest.fixture(scope="module")
def server(run):
    with running_server(run / "model", "--device", "cpu", "--backend", "torch") as (base, _):
        yield base


@pytest.fixture(scope="module")
def images(run, tmp_path_factory) -> list[Path]:
    """Two BCCD images, one of them enlarged to 200x150 (the detector's inputs differ in size)."""
    from PIL import Image

    first, second = sorted((run.parent / "bccd" / "JPEGImages").glob("*.jpg"))[:2]
    bigger = tmp_path_factory.mktemp("images") / "bigger.png"
    Image.open(second).resize((200, 150)).save(bigger)
    return [first, bigger]


def _boxes(found: dict) -> tuple[np.ndarray, list[str], np.ndarray]:
    return found["boxes"], list(found["labels"]), found["scores"]


def _served(boxes: list[dict]) -> tuple[np.ndarray, list[str], np.ndarray]:
    coords = np.array([[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in boxes]).reshape(-1, 4)
    return coords, [b["class"] for b in boxes], np.array([b["score"] for b in boxes])


def test_predict_returns_the_predictors_boxes_in_original_pixels(server, run, images):
    predictor = sigclass.load(run / "model", device="cpu")
    for image in images:
        expected = predictor.predict_boxes([image], score_threshold=0.0, max_detections=50)[0]
        response = httpx.post(server + "/predict", params={"score_threshold": 0.0, "max_detections": 50},
                              files={"file": (image.name, image.read_bytes())}, timeout=120)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["task"] == "detection" and body["input"] == image.name
        assert body["model"]["name"] and body["score_threshold"] == 0.0
        coords, labels, scores = _served(body["boxes"])
        want_coords, want_labels, want_scores = _boxes(expected)
        assert len(labels) == len(want_labels) > 0  # an untrained head still proposes boxes
        np.testing.assert_allclose(coords, want_coords, atol=1e-3)
        np.testing.assert_allclose(scores, want_scores, atol=1e-3)
        assert labels == want_labels
        width = 200 if image.suffix == ".png" else 160
        assert coords[:, 2].max() <= width + 1e-3  # the upload's pixels, not the model's 96 px
    # a raw image body, max_detections and score_threshold applied
    body = httpx.post(server + "/predict?score_threshold=0&max_detections=2",
                      content=images[0].read_bytes(), headers={"Content-Type": "image/jpeg"},
                      timeout=120).json()
    assert body["input"] == "body" and len(body["boxes"]) == 2
    top = np.floor(max(b["score"] for b in body["boxes"]) * 1e6) / 1e6  # not rounded above it
    high = httpx.post(server + f"/predict?score_threshold={top:.6f}",
                      files={"file": (images[0].name, images[0].read_bytes())}, timeout=120).json()
    assert all(b["score"] >= top - 1e-9 for b in high["boxes"]) and len(high["boxes"]) >= 1


def test_batch_gives_one_entry_per_image(server, run, images):
    files = [("files", (p.name, p.read_bytes())) for p in images]
    response = httpx.post(server + "/predict/batch?score_threshold=0.0", files=files, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "detection"
    assert [p["input"] for p in body["predictions"]] == [p.name for p in images]
    assert all(p["boxes"] for p in body["predictions"])


def test_metadata_and_openapi_say_detection(server):
    metadata = httpx.get(server + "/metadata", timeout=30).json()
    assert metadata["task"] == "detection"
    assert metadata["classes"] == ["Platelets", "RBC", "WBC"]
    assert metadata["input"]["accept"].startswith("image/")
    assert metadata["serving"]["backend"] == "torch"
    metrics = httpx.get(server + "/metrics", timeout=30)
    assert metrics.status_code == 200 and "sigclass_batch_size" in metrics.text
    openapi = httpx.get(server + "/openapi.json", timeout=30).json()
    schemas = openapi["components"]["schemas"]
    assert {"xmin", "ymin", "xmax", "ymax", "class", "score"} <= set(schemas["Box"]["properties"])
    assert "boxes" in schemas["DetectResponse"]["properties"]
    responses = openapi["paths"]["/predict"]["post"]["responses"]["200"]["content"]
    assert "DetectResponse" in str(responses) and "PredictResponse" in str(responses)
    names = {p["name"] for p in openapi["paths"]["/predict"]["post"]["parameters"]}
    assert {"score_threshold", "max_detections"} <= names


@pytest.mark.parametrize(("query", "field"), [("score_threshold=1.5", "score_threshold"),
                                              ("score_threshold=abc", "score_threshold"),
                                              ("max_detections=0", "max_detections")])
def test_bad_options_get_422_naming_the_field(server, images, query, field):
    response = httpx.post(server + f"/predict?{query}", timeout=60,
                          files={"file": (images[0].name, images[0].read_bytes())})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request" and field in body["message"]


def test_a_target_is_refused_clearly(server, images):
    response = httpx.post(server + "/predict?explain=true&target=RBC", timeout=60,
                          files={"file": (images[0].name, images[0].read_bytes())})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "bad_option"
    assert "each box's map explains the box's own class" in body["message"]


def test_a_text_upload_is_refused_naming_the_file(server):
    response = httpx.post(server + "/predict", timeout=60,
                          files={"file": ("notes.jpg", b"this is not a photo")})
    assert response.status_code == 422
    body = response.json()
    assert body["problems"][0]["path"] == "notes.jpg"
    assert "is not an image" in body["problems"][0]["reason"]
    text = httpx.post(server + "/predict", content=b"hello", timeout=60,
                      headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and "multipart form field 'file'" in text.json()["message"]


def test_engine_options_a_detector_cannot_use_are_refused(run):
    from sigclass.cli import main

    assert main(["serve", str(run / "model"), "--precision", "int8"]) == 2
    assert main(["serve", str(run / "model"), "--reject-unknown"]) == 2


def test_detection_options_on_a_classifier_are_refused():
    from sigclass.serve.detection import check_options
    from sigclass.serve.errors import ServiceError
    from sigclass.serve.model import ServedModel

    classifier = ServedModel.__new__(ServedModel)  # only its task is read
    with pytest.raises(ServiceError, match="apply to detection models only") as error:
        check_options(classifier, False, None, 0.5, None)
    assert error.value.status == 422
    check_options(classifier, True, None, None, None)  # classification options pass
