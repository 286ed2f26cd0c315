"""Calibrated confidence: temperature scaling fitted on the validation part, ECE and Brier score
before and after in metrics.json, the reliability diagram, the temperature kept in the model."""

from __future__ import annotations

import json

import numpy as np
import pytest

import sigclass as sc
from model_folders import edited_copy
from sigclass.evaluation.calibration import (
    MIN_ITEMS,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    log_loss,
    softmax,
    uncalibrated,
)
from sigclass.exceptions import ArtifactError


def _logits(n=400, classes=4, sharpness=1.0, seed=0):
    """Logits whose softmax is calibrated at ``sharpness`` 1 (labels drawn from it)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1.5, (n, classes))
    proba = softmax(base)
    y = np.array([rng.choice(classes, p=p) for p in proba])
    return base * sharpness, y


@pytest.mark.parametrize("sharpness", [3.0, 0.4])
def test_temperature_undoes_over_and_under_confidence(sharpness):
    logits, y = _logits(sharpness=sharpness)
    temperature, summary = fit_temperature(logits, y)
    assert temperature == pytest.approx(sharpness, rel=0.25)  # dividing by it restores the truth
    assert summary["log_loss"] < summary["log_loss_before"]
    before = expected_calibration_error(softmax(logits), y)
    after = expected_calibration_error(softmax(logits / temperature), y)
    assert after < before / 2 and after < 0.08  # 400 items: sampling noise remains
    assert brier_score(softmax(logits / temperature), y) < brier_score(softmax(logits), y)


def test_no_temperature_from_a_tiny_or_degenerate_validation_part():
    logits, y = _logits(n=MIN_ITEMS - 1)
    assert fit_temperature(logits, y)[0] == 1.0
    assert "validation items" in fit_temperature(logits, y)[1]["reason"]
    right = np.eye(3)[np.arange(30) % 3] * 2.0  # every item right: sharper is always better
    temperature, summary = fit_temperature(right, np.arange(30) % 3)
    assert temperature == 1.0 and "every validation item is right" in summary["reason"]


def test_ece_and_brier_on_known_cases():
    y = np.array([0, 1, 2, 0])
    perfect = np.eye(3)[y]
    assert expected_calibration_error(perfect, y) == 0 and brier_score(perfect, y) == 0
    wrong = np.eye(3)[(y + 1) % 3]
    assert expected_calibration_error(wrong, y) == 1 and brier_score(wrong, y) == 2
    # confidence 0.7 on each, right on 2 of 4: ECE |0.5 - 0.7| = 0.2
    half = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]])
    assert expected_calibration_error(half, np.array([0, 1, 1, 0])) == pytest.approx(0.2)
    assert log_loss(np.log(perfect + 1e-12), y) < 1e-6


def test_probabilities_before_scaling_are_recovered():
    logits, _ = _logits(n=50, sharpness=2.0)
    after = softmax(logits / 2.5)
    np.testing.assert_allclose(uncalibrated(after, 2.5), softmax(logits), atol=1e-9)


@pytest.fixture(scope="module")
def network_run(tmp_path_factory):
    """A 1D CNN on GunPoint with 20 validation cases, so that a temperature is fitted."""
    return sc.train("aeon:GunPoint", mode="scratch", model="simple_cnn1d", seed=0, progress=False,
                    out=tmp_path_factory.mktemp("calibration") / "run", val_size=0.4,
                    **{"train.epochs": 8, "tracking.enabled": False})


def test_a_network_run_is_calibrated_and_reports_it(network_run):
    calibration = network_run.metrics["calibration"]
    summary = json.loads((network_run.dir / "run.json").read_text())["calibration"]
    assert summary["n"] == 20 and "reason" not in summary
    assert calibration["temperature"] == summary["temperature"] != 1.0
    for key in ("ece", "brier", "ece_uncalibrated", "brier_uncalibrated"):
        assert 0 <= calibration[key] <= 2
    assert calibration["ece"] != calibration["ece_uncalibrated"]
    saved = json.loads((network_run.dir / "metrics.json").read_text())["calibration"]
    assert saved == pytest.approx(calibration)
    assert (network_run.dir / "calibration.png").stat().st_size > 5000
    model = json.loads((network_run.dir / "model" / "model.json").read_text())
    assert model["temperature"] == calibration["temperature"]


def test_the_loaded_model_returns_calibrated_probabilities(network_run):
    from sigclass.data.signals import load_signals

    predictor = sc.load(network_run.dir)
    assert predictor.temperature == network_run.metrics["calibration"]["temperature"]
    X = load_signals("aeon:GunPoint").X[:10]
    logits = predictor.transform(X)
    np.testing.assert_allclose(predictor.predict_proba(X), softmax(logits / predictor.temperature),
                               atol=1e-6)


@pytest.mark.parametrize("bad", ["hot", 0, -1.0, 1e9, True, None])
def test_a_tampered_temperature_is_refused(network_run, tmp_path, bad):
    folder = edited_copy(network_run.dir / "model", tmp_path / "model", temperature=bad)
    with pytest.raises(ArtifactError, match="temperature"):
        sc.load(folder)


def test_headless_runs_report_the_heads_calibration(colour_folder, tmp_path):
    run = sc.train(colour_folder, mode="headless", model="efficientnet_lite0", image_size=64,
                   out=tmp_path / "hl", progress=False, **{"tracking.enabled": False})
    calibration = run.metrics["calibration"]
    assert set(calibration) == {"ece", "brier", "bins"}
    assert (tmp_path / "hl" / "calibration.png").is_file()
