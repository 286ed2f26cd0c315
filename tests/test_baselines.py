"""Non-deep baselines (HOG + LBP with an SVM on images, catch22 with a random forest on signals)
and MultiROCKET-Hydra: each trains on real data, is saved without pickle, loads back to the same
probabilities and is a default row of ``sigclass compare``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sigclass as sc
from sigclass.data.signals import load_signals
from sigclass.exceptions import ConfigError
from sigclass.models import create_model
from sigclass.workflows.compare import default_entries


@pytest.fixture(scope="module")
def gun_point():
    return load_signals("aeon:GunPoint")


@pytest.fixture(scope="module")
def basic_motions():
    return load_signals("aeon:BasicMotions")


def _same_after_reload(run, inputs) -> sc.Predictor:
    loaded = sc.load(run.dir)
    assert loaded.mode == "headless" and loaded.model_name == run.config.model
    assert loaded.engine.name == "torch"  # NumPy featurizers are never exported to ONNX
    np.testing.assert_allclose(loaded.predict_proba(inputs), run.predictor.predict_proba(inputs),
                               atol=1e-6)
    document = json.loads((run.dir / "model" / "model.json").read_text())
    assert set(document["files"]) == {"weights.safetensors", "head.skops", "ood.safetensors"}
    return loaded


def _stripes(root, per_class: int = 12):
    """Horizontal stripes, vertical stripes and a checkerboard, 64 px, random phase and noise:
    classes that gradient orientations (HOG) tell apart and colour does not."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    patterns = {"horizontal": lambda p: (y + p) // 4 % 2, "vertical": lambda p: (x + p) // 4 % 2,
                "checks": lambda p: ((x + p) // 8 + (y + p) // 8) % 2}
    for name, pattern in patterns.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            grey = pattern(int(rng.integers(0, 8))) * 160 + 40 + rng.normal(0, 25, (64, 64))
            array = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
            Image.fromarray(array).save(root / name / f"{name}_{i}.png")
    return root


def test_hog_lbp_svm_trains_saves_loads_and_predicts_the_same(tmp_path):
    data = _stripes(tmp_path / "data")
    run = sc.train(data, mode="headless", model="hog_lbp", head="rbf_svm", image_size=64, seed=0,
                   out=tmp_path / "run", progress=False)
    # chance is 1/3; a featurizer blind to orientation (or a head that ignores it) fails this
    assert run.metrics["n"] >= 6 and run.metrics["accuracy"] >= 0.9, run.metrics["confusion_matrix"]
    photos = sorted(str(p) for p in data.rglob("*.png"))[::6]
    loaded = _same_after_reload(run, photos)
    probabilities = loaded.predict_proba(photos)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    head = json.loads((run.dir / "model" / "model.json").read_text())["head"]["type"]
    assert head == "StandardScaler -> CalibratedClassifierCV"
    assert type(loaded.head[-1].estimator).__name__ == "SVC"


def test_hog_lbp_features_have_the_announced_width_at_any_input_size():
    network = create_model("hog_lbp", n_classes=0)
    assert network.pretrained_cfg["input_size"] == (3, 128, 128)
    generator = torch.Generator().manual_seed(0)
    for size in (64, 128, 200):
        images = torch.rand((2, 3, size, size), generator=generator) * 2 - 1
        features = network(images)
        assert features.shape == (2, network.num_features)
        assert torch.isfinite(features).all()
    # The LBP histograms of every region sum to one.
    lbp = features[:, network.n_hog:].reshape(2, -1)
    assert torch.allclose(lbp[:, :10].sum(dim=1), torch.ones(2), atol=1e-5)


def test_hog_lbp_is_only_a_featurizer():
    with pytest.raises(ConfigError, match=r"^'hog_lbp' is a featurizer for headless mode"):
        create_model("hog_lbp", n_classes=4)


def test_catch22_random_forest_trains_saves_loads_and_predicts_the_same(gun_point, tmp_path):
    run = sc.train(gun_point, mode="headless", model="catch22", head="random_forest", seed=0,
                   out=tmp_path / "run", progress=False,
                   head_params={"max_features": "sqrt", "min_samples_leaf": 1})
    assert run.metrics["n"] == 150
    assert run.metrics["accuracy"] >= 0.8, run.metrics["confusion_matrix"]
    assert run.predictor.network.num_features == 22
    _same_after_reload(run, gun_point.X[-20:])


def test_multirocket_hydra_learns_gun_point_and_round_trips(gun_point, tmp_path):
    run = sc.train(gun_point, mode="headless", model="multirocket_hydra", seed=0,
                   out=tmp_path / "run", progress=False)
    assert run.metrics["n"] == 150
    assert run.metrics["accuracy"] >= 0.95, run.metrics["confusion_matrix"]
    assert json.loads((run.dir / "metrics.json").read_text())["accuracy"] == run.metrics["accuracy"]
    _same_after_reload(run, gun_point.X[-20:])


def test_multirocket_hydra_multivariate_round_trip(basic_motions, tmp_path):
    run = sc.train(basic_motions, mode="headless", model="multirocket_hydra", seed=0,
                   out=tmp_path / "run", progress=False, model_args={"n_kernels": 840})
    network = run.predictor.network
    assert network.num_features == 8 * 840 + network.n_hydra_features
    assert network.mr_channel_indices.numel() > 0  # the multivariate state is saved too
    _same_after_reload(run, basic_motions.X[-10:])


def test_multirocket_hydra_fit_is_seeded_and_leaves_global_random_state(gun_point):
    X = np.ascontiguousarray(gun_point.X[:30], dtype=np.float32)
    np.random.seed(123)
    torch.manual_seed(123)
    expected = np.random.rand(), float(torch.rand(1))
    np.random.seed(123)
    torch.manual_seed(123)
    first = create_model("multirocket_hydra", 0, n_timepoints=150, n_kernels=168).fit(X)
    assert (np.random.rand(), float(torch.rand(1))) == expected
    second = create_model("multirocket_hydra", 0, n_timepoints=150, n_kernels=168).fit(X)
    torch.testing.assert_close(first(torch.from_numpy(X)), second(torch.from_numpy(X)))
    with pytest.raises(ConfigError, match="at least 10 timepoints"):
        create_model("multirocket_hydra", 0, n_timepoints=8)


def test_new_models_are_default_leaderboard_rows():
    image = {e.name: e for e in default_entries("image")}
    assert image["hog_lbp_svm"].model == "hog_lbp" and image["hog_lbp_svm"].overrides == {"head": "rbf_svm"}
    signal = {e.name: e for e in default_entries("signal")}
    assert signal["catch22_rf"].model == "catch22" and signal["catch22_rf"].overrides["head"] == "random_forest"
    assert signal["multirocket_hydra"].mode == "headless"
    assert {"minirocket", "signal_image"} <= set(signal)
