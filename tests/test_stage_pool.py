"""Pooled stages: the featurizer's wider vector, saved and reloaded, explained like the final map."""

from __future__ import annotations

import numpy as np
import pytest

import sigclass as sc
from sigclass.exceptions import ConfigError
from sigclass.explain import explain
from sigclass.training.image_featurizer import Featurizer


def test_stage_features_hold_the_final_mean_and_agree_across_backends(colour_folder, tmp_path):
    files = sorted(str(p) for p in colour_folder.glob("*/*.png"))[:4]
    final = Featurizer("efficientnet_lite0", image_size=64, backend="torch", cache_dir=False,
                       device="cpu").fit()
    stages = Featurizer("efficientnet_lite0", image_size=64, backend="torch", cache_dir=False,
                        device="cpu", pooling="stages").fit()
    wide = stages.transform(files)
    start, stop = stages.network_.final_mean_slice
    assert wide.shape == (4, stages.n_features_out_) and stages.n_features_out_ > 2 * 1280
    np.testing.assert_allclose(wide[:, start:stop], final.transform(files), rtol=1e-4, atol=1e-5)
    maxes = wide[:, stop:]  # the final map's max is at least its mean
    assert (maxes >= wide[:, start:stop] - 1e-5).all()
    onnx = Featurizer("efficientnet_lite0", image_size=64, backend="onnx", cache_dir=tmp_path,
                      pooling="stages").fit()
    np.testing.assert_allclose(onnx.transform(files), wide, atol=3e-4)
    assert onnx.cache_key_ != Featurizer("efficientnet_lite0", image_size=64,
                                         cache_dir=tmp_path).fit().cache_key_


def test_a_stage_pooled_headless_run_saves_loads_and_explains(colour_folder, tmp_path):
    run = sc.train(colour_folder, mode="headless", model="efficientnet_lite0", image_size=64,
                   out=tmp_path / "run", progress=False, cache_dir=str(tmp_path / "cache"),
                   **{"cam_examples": 0})
    assert run.predictor.network.model_spec["kwargs"] == {"feature_pool": "stages"}  # the default
    loaded = sc.load(tmp_path / "run")
    files = sorted(str(p) for p in colour_folder.glob("*/*_1.png"))
    np.testing.assert_allclose(loaded.predict_proba(files), run.predictor.predict_proba(files),
                               atol=1e-5)
    for method in ("auto", "layercam"):
        explanations = explain(loaded, files, method=method)
        assert [ex.map.shape for ex in explanations] == [(32, 32)] * 3
        np.testing.assert_allclose(np.stack([ex.probabilities for ex in explanations]),
                                   loaded.predict_proba(files), atol=1e-4)


def test_stage_pooling_is_refused_where_it_cannot_apply():
    with pytest.raises(ConfigError, match="feature_pool='stages' needs a featurizer"):
        sc.create_model("efficientnet_lite0", n_classes=3, feature_pool="stages")
    with pytest.raises(ConfigError, match="'simple_cnn_gap' has none"):
        Featurizer("simple_cnn_gap", pretrained=False, pooling="stages").fit()
    assert Featurizer("simple_cnn_gap", pretrained=False, pooling="auto").fit().n_features_out_ > 0
    with pytest.raises(ConfigError, match="'pooling' option must be one of"):
        sc.RunConfig(pooling="max").validate()
