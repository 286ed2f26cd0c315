"""Detection end to end on 8 BCCD images at 160x120: `sigclass train --task detection`, COCO
metrics, the model folder, `sigclass.load` round trip and `sigclass predict` boxes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import sigclass
from detection_models import needs_bccd, tiny_bccd, train_detection_model
from sigclass.cli import main
from sigclass.exceptions import ArtifactError, ConfigError

pytestmark = needs_bccd


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_detection_model(tmp_path_factory.mktemp("detect"))


def test_training_writes_coco_metrics_and_a_detection_model(run):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["part"] == "test"
    assert 0 <= metrics["map"] <= metrics["map_50"] <= 1
    assert set(metrics["per_class"]) == {"Platelets", "RBC", "WBC"}
    rbc = metrics["per_class"]["RBC"]
    assert rbc["n_boxes"] > 0 and 0 <= rbc["recall_50"] <= 1
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 1 and {"train_loss_classifier", "val_map", "val_map_50"} <= set(history[0])
    document = json.loads((run / "model" / "model.json").read_text())
    assert document["task"] == "detection"
    assert document["network"]["kwargs"]["backbone"] == "efficientnet_lite0"
    report = json.loads((run / "data_report.json").read_text())
    assert report["layout"] == "voc" and report["images"] == 8
    curves = metrics["pr_curves"]
    assert len(curves["recall"]) == 101 and set(curves["precision"]) <= {"Platelets", "RBC", "WBC"}
    assert all(0 <= p <= 1 for values in curves["precision"].values() for p in values)
    page = (run / "report" / "report.html").read_text()
    shown = sorted((run / "report" / "images").glob("*.jpg"))
    assert (run / "report" / "pr_curves.png").stat().st_size > 0 and "Worst images" in page
    assert len(shown) == metrics["n_images"] and all(f"images/{p.name}" in page for p in shown)


def test_load_round_trip_gives_identical_boxes(run, tmp_path):
    import torch

    first = sigclass.load(run, device="cpu")
    images = [p for p in sorted((run.parent / "bccd" / "JPEGImages").glob("*.jpg"))[:2]]
    before = first.predict_boxes(images, score_threshold=0.0)
    first.save(tmp_path / "copy")
    second = sigclass.load(tmp_path / "copy", device="cpu")
    after = second.predict_boxes(images, score_threshold=0.0)
    assert sum(len(f["boxes"]) for f in before) > 0
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
        np.testing.assert_array_equal(a["scores"], b["scores"])
        assert list(a["labels"]) == list(b["labels"])
    with torch.no_grad():
        for (name, x), (_, y) in zip(first.network.state_dict().items(),
                                     second.network.state_dict().items(), strict=True):
            assert torch.equal(x, y), name


def test_predict_writes_one_row_per_box(run, tmp_path, capsys):
    folder = run.parent / "bccd" / "JPEGImages"
    out = tmp_path / "boxes.csv"
    assert main(["predict", str(run), str(folder), "-o", str(out), "--score-threshold", "0.0",
                 "--max-detections", "5"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "xmin", "ymin", "xmax", "ymax", "label", "score", "error"]
    per_image = {}
    for row in rows:
        per_image[row["path"]] = per_image.get(row["path"], 0) + 1
        assert row["label"] in {"Platelets", "RBC", "WBC"}
        assert float(row["xmin"]) < float(row["xmax"]) and 0 <= float(row["score"]) <= 1
    assert len(per_image) == 8 and max(per_image.values()) <= 5
    high = tmp_path / "high.csv"
    assert main(["predict", str(run), str(folder), "-o", str(high), "--score-threshold", "0.99"]) == 0
    rows = list(csv.DictReader(high.open()))  # an image without such a box: one empty row
    assert len({r["path"] for r in rows}) == 8
    assert all(float(r["score"]) >= 0.99 for r in rows if r["label"])


def test_evaluate_scores_a_detection_model_on_box_data(run, tmp_path, capsys):
    data = run.parent / "bccd"
    assert main(["evaluate", str(run), str(data), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["part"] == "all" and metrics["n_images"] == 8
    assert len(list((tmp_path / "eval" / "report" / "images").glob("*.jpg"))) == 8
    assert "mAP@0.5" in capsys.readouterr().out
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["n_images"] < metrics["n_images"]


def test_detection_model_refuses_classification_and_the_reverse(run, tmp_path, capsys):
    detector = sigclass.load(run)
    image = next((run.parent / "bccd" / "JPEGImages").glob("*.jpg"))
    assert main(["explain", str(run), "--report", str(run.parent / "bccd"),
                 "--out", str(tmp_path / "cam")]) == 2
    assert "is a detection model: --report, --masks and --target apply to classification models" \
        in capsys.readouterr().err
    with pytest.raises(ConfigError, match="is a detection model: it finds boxes"):
        detector.predict_proba(["x.jpg"])
    from sigclass.predictor import Predictor

    document = json.loads((run / "model" / "model.json").read_text())
    with pytest.raises(ArtifactError, match="holds a detection model, not a classifier"):
        Predictor.from_folder(run / "model", document)
    classifier = tmp_path / "classifier"
    network = sigclass.create_model("simple_cnn_gap", n_classes=2)
    from sigclass.artifacts import save_predictor

    config = {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}
    save_predictor(Predictor(network, ["a", "b"], config), classifier)
    code = main(["predict", str(classifier), str(image), "-o", str(tmp_path / "p.csv"),
                 "--score-threshold", "0.5"])
    assert code == 2
    assert "is a classification model: --score-threshold and --max-detections apply to " \
           "detection models only" in capsys.readouterr().err


def test_resume_restores_the_trained_weights_and_split(run):
    before = json.loads((run / "metrics.json").read_text())
    split = (run / "split.json").read_text()
    assert json.loads((run / "run.json").read_text()) == {"task": "detection", "status": "finished"}
    assert main(["train", "--resume", "--out", str(run), "-q"]) == 0
    assert json.loads((run / "metrics.json").read_text()) == before
    assert (run / "split.json").read_text() == split
    assert len(json.loads((run / "history.json").read_text())) == 1


def test_a_new_run_refuses_a_used_folder(run):
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        from sigclass.workflows.detect import train_detection

        train_detection(run.parent / "bccd", run)


@pytest.mark.parametrize("arch", ["fasterrcnn", "retinanet", "fcos"])
def test_every_architecture_learns_from_boxes_and_returns_boxes(arch):
    import torch

    from sigclass.models.detection import build_detector

    torch.manual_seed(0)
    network = build_detector(2, arch=arch, pretrained=False, image_size=64)
    images = [torch.rand(3, 48, 64), torch.rand(3, 48, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[20.0, 10.0, 60.0, 40.0]]), "labels": torch.tensor([2])}]
    losses = network.train()(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert network.backbone.fpn.inner_blocks[0][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in network.backbone.body.conv_stem.parameters())
    found = network.eval()(images)
    assert len(found) == 2 and set(found[0]) == {"boxes", "labels", "scores"}
    assert network.model_spec["kwargs"]["arch"] == arch


def test_unknown_architecture_is_named():
    from sigclass.models.detection import build_detector

    with pytest.raises(ConfigError, match="The detector 'arch' must be one of 'fasterrcnn', "
                       "'retinanet', 'fcos'. Got 'yolo'."):
        build_detector(2, arch="yolo", pretrained=False)


@needs_bccd
def test_automatic_size_shrinks_to_fit_the_time_budget(tmp_path):
    """No size and no epochs given: the data's own shorter side (480 px, at most 512) is timed
    and shrunk to the smallest automatic size when a few seconds cannot hold the target epochs;
    the size is saved in config.yaml (a resume rebuilds it) and explained in the model."""
    import yaml

    from sigclass.config import RunConfig
    from sigclass.training.detection import DEFAULT_EPOCHS, MIN_AUTO_SIZE
    from sigclass.workflows.detect import train_detection

    data = tiny_bccd(tmp_path / "bccd", n=4, shrink=1)
    cfg = RunConfig().updated({"tracking.enabled": False, "train.max_minutes": 0.05,
                               "val_size": 0.25, "test_size": 0.25})
    run = train_detection(data, tmp_path / "run", cfg, progress=False)
    training = run.predictor.info["training"]
    assert training["image_size"] == MIN_AUTO_SIZE
    assert training["image_size_reason"].startswith(f"{MIN_AUTO_SIZE} px instead of the network's 480")
    assert run.predictor.network.model_spec["kwargs"]["image_size"] == MIN_AUTO_SIZE
    assert yaml.safe_load((run.dir / "config.yaml").read_text())["image_size"] == MIN_AUTO_SIZE
    assert training["max_minutes"] == 0.05 and training["epochs_run"] < DEFAULT_EPOCHS


def test_image_matches_count_found_false_and_missed_boxes():
    from sigclass.evaluation.detection import image_matches

    truth = {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], "labels": [1, 1, 2]}
    found = {"boxes": [[0, 0, 10, 11], [1, 1, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50],
                       [60, 60, 70, 70]],
             "labels": [1, 1, 2, 2, 1], "scores": [0.9, 0.8, 0.95, 0.7, 0.3]}
    # box 1 matches, box 2 duplicates it, box 3 has the wrong class, box 4 matches, box 5 is too weak
    assert image_matches(found, truth) == {"tp": 2, "fp": 2, "fn": 1, "f1": 4 / 7}
    assert image_matches(found, truth, score_threshold=0.0)["fp"] == 3
    assert image_matches({"boxes": [], "labels": [], "scores": []},
                         {"boxes": [], "labels": []})["f1"] == 1.0
