"""Conformal prediction sets: the APS sets and their threshold, the coverage guarantee on
synthetic data, and a network run and a headless run that keep the threshold in model.json,
report coverage in metrics.json and write the sets to `sigclass predict`'s output."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

import sigclass as sc
from model_folders import edited_copy
from sigclass.cli import main
from sigclass.evaluation.calibration import softmax
from sigclass.evaluation.conformal import (
    aps_scores,
    coverage_metrics,
    fit_threshold,
    prediction_sets,
)
from sigclass.exceptions import ArtifactError, ConfigError

CLASSES = ["a", "b", "c", "d"]


def test_sets_take_classes_by_falling_probability_up_to_the_threshold():
    proba = np.array([[0.15, 0.5, 0.05, 0.3]])
    np.testing.assert_allclose(aps_scores(proba), [[0.8, 0.0, 0.95, 0.5]])  # the mass above
    assert prediction_sets(proba, CLASSES, 0.5) == [["b", "d"]]
    assert prediction_sets(proba, CLASSES, 0.9) == [["b", "d", "a"]]
    assert prediction_sets(proba, CLASSES, 0.0) == [["b"]]  # never empty: the top class scores 0
    assert prediction_sets(proba, CLASSES, None) == [["b", "d", "a", "c"]]  # no threshold: all
    ties = np.array([[0.4, 0.4, 0.2]])  # ties go by class order
    assert prediction_sets(ties, CLASSES[:3], 0.0) == [["a"]]


def test_the_threshold_is_the_finite_sample_quantile():
    proba = np.tile([0.6, 0.3, 0.1, 0.0], (9, 1))
    y = np.array([0] * 5 + [1] * 3 + [2])  # scores 0 (5 times), 0.6 (3), 0.9 (1)
    assert fit_threshold(proba, y, 0.9)["qhat"] == pytest.approx(0.9)  # rank ceil(10 * 0.9) = 9
    assert fit_threshold(proba, y, 0.8)["qhat"] == pytest.approx(0.6)  # rank 8
    assert fit_threshold(proba, y, 0.5)["qhat"] == 0.0  # rank 5
    too_few = fit_threshold(proba[:8], y[:8], 0.9)
    assert too_few["qhat"] is None and too_few["n"] == 8
    assert too_few["reason"] == ("8 calibration items; coverage 0.9 needs at least 9, so every "
                                 "prediction set is all classes")


def _draw(rng, n, sharpness, k=5):
    """Probabilities whose labels are drawn from the softmax of ``base``; the model reports
    them sharpened (over-confident) or softened by ``sharpness``."""
    base = rng.normal(0, 1.5, (n, k))
    y = (softmax(base).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return softmax(base * sharpness), y


@pytest.mark.parametrize("sharpness", [1.0, 3.0, 0.4])
def test_coverage_holds_on_average_whatever_the_calibration(sharpness):
    rng = np.random.default_rng(0)
    coverages, sizes = [], []
    for _ in range(200):
        calibration, test = _draw(rng, 100, sharpness), _draw(rng, 500, sharpness)
        threshold = fit_threshold(*calibration, coverage=0.9)
        found = coverage_metrics(*test, [str(i) for i in range(5)], threshold)
        coverages.append(found["coverage"])
        sizes.append(found["mean_set_size"])
    # guaranteed >= 0.9 in expectation (standard error ~0.002); non-randomized APS over-covers
    # a little, most for an over-confident model
    assert 0.895 <= np.mean(coverages) <= 0.935
    assert 1 < np.mean(sizes) < 4.5  # informative: well under the 5 classes


def test_per_class_coverage_and_set_size():
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    found = coverage_metrics(proba, np.array([0, 1, 1, 1]), ["x", "y"],
                             {"coverage": 0.9, "qhat": 0.5, "n": 20})
    # sets {x}, {x}, {y}, {x}: the second and fourth miss their true class y
    assert found["coverage"] == pytest.approx(0.5) and found["mean_set_size"] == pytest.approx(1.0)
    assert found["per_class"] == {"x": {"coverage": 1.0, "mean_set_size": 1.0, "n": 1},
                                  "y": {"coverage": pytest.approx(1 / 3), "mean_set_size": 1.0, "n": 3}}
    wide = coverage_metrics(proba, np.array([0, 1, 1, 1]), ["x", "y"], {"coverage": 0.9, "qhat": 0.7})
    assert wide["coverage"] == 1.0 and wide["mean_set_size"] == 1.5  # y: 0.6 and 0.7 above it
    assert (found["target_coverage"], found["qhat"], found["n_calibration"]) == (0.9, 0.5, 20)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "high", True])
def test_coverage_must_be_a_probability(bad):
    with pytest.raises(ConfigError, match="The 'coverage' option must be a probability"):
        sc.RunConfig(coverage=bad).validate()


def test_a_bad_coverage_is_one_line_and_exit_2(colour_folder, capsys):
    assert main(["train", str(colour_folder), "--coverage", "1.5", "--no-track"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The 'coverage' option must be a probability between 0 and 1")
    assert "Got 1.5" in err and err.count("\n") == 1


def _check_run(run, calibrated_on: str):
    conformal = json.loads((run.dir / "metrics.json").read_text())["conformal"]
    assert conformal["target_coverage"] == 0.9 and 0 <= conformal["qhat"] <= 1 + 1e-6
    assert 0 <= conformal["coverage"] <= 1 and 1 <= conformal["mean_set_size"] <= len(run.predictor.classes)
    assert conformal["n"] == sum(c["n"] for c in conformal["per_class"].values())
    assert set(conformal["per_class"]) <= set(run.predictor.classes)
    summary = json.loads((run.dir / "run.json").read_text())["conformal"]
    assert summary["calibrated_on"].startswith(calibrated_on) and summary["n"] == conformal["n_calibration"]
    model = json.loads((run.dir / "model" / "model.json").read_text())["conformal"]
    assert model == {"method": "aps", "coverage": 0.9, "qhat": conformal["qhat"], "n": summary["n"]}
    assert sc.load(run.dir).conformal == model


@pytest.fixture(scope="module")
def network_run(tmp_path_factory):
    """A 1D CNN on GunPoint with 20 validation cases to calibrate on."""
    return sc.train("aeon:GunPoint", mode="scratch", model="simple_cnn1d", seed=0, progress=False,
                    out=tmp_path_factory.mktemp("conformal") / "run", val_size=0.4,
                    **{"train.epochs": 5, "tracking.enabled": False})


def test_a_network_run_is_calibrated_on_its_validation_part(network_run):
    _check_run(network_run, "the validation part (temperature-scaled")
    assert network_run.predictor.conformal["n"] == 20


def test_a_tampered_threshold_is_refused(network_run, tmp_path):
    conformal = network_run.predictor.conformal
    folder = edited_copy(network_run.dir / "model", tmp_path / "model",
                         conformal={**conformal, "coverage": 1.5, "extra": 1})
    with pytest.raises(ArtifactError, match="conformal"):
        sc.load(folder)


def test_a_headless_run_is_calibrated_out_of_fold_and_predict_writes_the_sets(colour_folder, tmp_path):
    run = sc.train(colour_folder, mode="headless", model="efficientnet_lite0", image_size=64,
                   out=tmp_path / "hl", progress=False, **{"tracking.enabled": False})
    _check_run(run, "out-of-fold probabilities")
    assert run.predictor.conformal["n"] == 36 - run.metrics["conformal"]["n"]  # all but the test part
    output = tmp_path / "scores.csv"
    assert main(["predict", str(run.dir), str(colour_folder / "red"), "-o", str(output), "-q"]) == 0
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    proba = np.array([[float(row[f"p_{c}"]) for c in run.predictor.classes] for row in rows])
    expected = run.predictor.prediction_sets(proba)
    for row, classes in zip(rows, expected, strict=True):
        assert row["prediction_set"] == "|".join(classes)
        assert row["prediction_set"].split("|")[0] == row["predicted"]


def test_too_few_calibration_items_give_every_class_and_say_why(colour_folder, tmp_path):
    run = sc.train(colour_folder, mode="headless", model="efficientnet_lite0", image_size=64,
                   out=tmp_path / "hl", progress=False, coverage=0.99, **{"tracking.enabled": False})
    summary = json.loads((run.dir / "run.json").read_text())["conformal"]
    assert summary["qhat"] is None and "needs at least 99" in summary["reason"]
    conformal = run.metrics["conformal"]
    assert conformal["coverage"] == 1.0 and conformal["mean_set_size"] == 3.0
    assert json.loads((run.dir / "model" / "model.json").read_text())["conformal"]["qhat"] is None


def test_a_headless_run_with_its_own_validation_folder_is_calibrated_on_it(colour_folder, tmp_path):
    root = tmp_path / "parts"
    for image in sorted(colour_folder.rglob("*.png")):
        index = int(image.stem.split("_")[1])
        part = "train" if index < 5 else "val" if index < 9 else "test"
        (root / part / image.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, root / part / image.parent.name / image.name)
    run = sc.train(root, mode="headless", model="efficientnet_lite0", image_size=64,
                   out=tmp_path / "hl", progress=False, **{"tracking.enabled": False})
    summary = json.loads((run.dir / "run.json").read_text())["conformal"]
    assert summary["calibrated_on"] == "the validation part (not trained on)" and summary["n"] == 12
    assert run.metrics["conformal"]["n"] == 9
