"""The featurizers of headless mode follow scikit-learn's conventions: they clone, fit in a
``Pipeline``, take part in a ``GridSearchCV``, refuse ``transform`` before ``fit`` with
scikit-learn's own ``NotFittedError``, and pass ``check_estimator`` where its checks apply."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import check_estimator

import sigclass as sc
from sigclass.exceptions import SigclassError
from sigclass.training.featurizer import BaseFeaturizer, NotFittedError
from sigclass.training.image_featurizer import Featurizer
from sigclass.training.signal_featurizer import SignalFeaturizer


def _signals(n_per_class: int = 12, n_timepoints: int = 40, seed: int = 0):
    """Two classes of two-channel cases: a slow and a fast sine under noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 4 * np.pi, n_timepoints)
    cases, labels = [], []
    for label, freq in enumerate((1.0, 3.0)):
        for _ in range(n_per_class):
            phase = rng.uniform(0, np.pi)
            cases.append(np.stack([np.sin(freq * t + phase), np.cos(freq * t + phase)])
                         + 0.2 * rng.normal(size=(2, n_timepoints)))
            labels.append(label)
    return np.asarray(cases, dtype=np.float32), np.asarray(labels)


def _image_featurizer(cache_dir) -> Featurizer:
    return Featurizer("efficientnet_lite0", image_size=32, backend="torch", cache_dir=cache_dir,
                      device="cpu")


def test_both_featurizers_share_one_base_and_clone_to_their_arguments(tmp_path):
    signal = SignalFeaturizer("minirocket", model_args={"n_kernels": 84}, batch_size=16)
    image = _image_featurizer(tmp_path)
    for featurizer in (signal, image):
        assert isinstance(featurizer, BaseFeaturizer)
        copy = clone(featurizer)
        assert type(copy) is type(featurizer) and copy is not featurizer
        assert copy.get_params() == featurizer.get_params()
        assert not [name for name in vars(copy) if name.endswith("_")]  # __init__ stores arguments


@pytest.mark.parametrize("kind", ["signal", "image"])
def test_transform_before_fit_raises_sklearns_not_fitted_error(kind, tmp_path):
    featurizer = SignalFeaturizer() if kind == "signal" else _image_featurizer(tmp_path)
    with pytest.raises(NotFittedError, match="not fitted yet; call fit") as caught:
        featurizer.transform(np.zeros((2, 1, 16), dtype=np.float32))
    assert isinstance(caught.value, SklearnNotFittedError)
    assert isinstance(caught.value, SigclassError)


def test_signal_featurizer_in_a_pipeline_and_a_grid_search():
    X, y = _signals()
    pipeline = Pipeline([("features", SignalFeaturizer("minirocket", model_args={"n_kernels": 84},
                                                       backend="torch", device="cpu")),
                         ("head", LogisticRegression(max_iter=1000))])
    assert pipeline.fit(X, y).score(X, y) == 1.0
    grid = [{"features__model": ["minirocket"], "features__model_args": [{"n_kernels": 84}]},
            {"features__model": ["catch22"], "features__model_args": [None]}]
    search = GridSearchCV(pipeline, grid, cv=3, error_score="raise").fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_["features__model"] in ("minirocket", "catch22")
    assert search.best_score_ > 0.9
    assert search.best_estimator_.named_steps["features"] is not pipeline.named_steps["features"]


def test_image_featurizer_in_a_pipeline_and_a_grid_search(colour_folder, tmp_path):
    data = sc.ImageDataset.from_folder(colour_folder)
    files = [str(p) for p in data.paths]
    pipeline = Pipeline([("features", _image_featurizer(tmp_path)),
                         ("head", LogisticRegression(max_iter=500))])
    search = GridSearchCV(pipeline, {"features__tta": ["none", "hflip"],
                                     "head__C": [0.1, 1.0]}, cv=3)
    search.fit(files, data.labels)
    assert search.best_score_ == 1.0
    assert search.best_estimator_.named_steps["features"].tta_ == search.best_params_["features__tta"]


# What check_estimator asks of a general transformer of numeric tables that a featurizer of
# signals is not, or words otherwise (sigclass's DataError names the input and the fix).
NOT_APPLICABLE = {
    "check_complex_data": "complex cases are refused with a DataError of its own words",
    "check_estimators_empty_data_messages": "the check wants its own error message",
    "check_estimator_sparse_tag": "signals are dense arrays (n_cases, n_channels, n_timepoints)",
    "check_estimator_sparse_array": "signals are dense arrays (n_cases, n_channels, n_timepoints)",
    "check_estimator_sparse_matrix": "signals are dense arrays (n_cases, n_channels, n_timepoints)",
    "check_n_features_in_after_fitting": "a case of the wrong length is refused by a DataError "
                                         "naming it and the length the model takes",
    "check_fit2d_predict1d": "a 1D array is one case, as in aeon's convention",
    "check_transformer_preserve_dtypes": "features are float32, the dtype of the network",
    "check_dict_unchanged": "the inference engine is built on the first transform",
    "check_fit_idempotent": "catch22 divides by zero on the check's 4-timepoint series",
}


def test_signal_featurizer_passes_check_estimator():
    check_estimator(SignalFeaturizer("catch22", backend="torch", device="cpu"),
                    expected_failed_checks=NOT_APPLICABLE, on_skip=None)
