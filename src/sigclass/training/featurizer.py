"""What the featurizers of headless mode share: scikit-learn's transformer conventions around a
network run by an inference engine.

:class:`~sigclass.training.image_featurizer.Featurizer` (a frozen pretrained image network) and
:class:`~sigclass.training.signal_featurizer.SignalFeaturizer` (MiniRocket and the other signal
featurizers, fitted on training cases) both derive from :class:`BaseFeaturizer`: ``__init__``
only stores its arguments, ``fit`` builds the network and returns ``self``, what it learned ends
in ``_``, and ``transform`` before ``fit`` raises :class:`NotFittedError`, which is
scikit-learn's own. So either drops into ``clone``, a ``Pipeline`` and ``GridSearchCV``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from ..exceptions import SigclassError
from ..inference import make_engine


class NotFittedError(SigclassError, SklearnNotFittedError):
    """A featurizer was used before ``fit``; scikit-learn's ``NotFittedError`` as well."""


class BaseFeaturizer(TransformerMixin, BaseEstimator):
    """A network turned into a scikit-learn transformer: one feature vector per input.

    A subclass's ``fit`` sets ``network_``, ``preprocessor_``, ``data_config_``,
    ``n_features_out_`` and ``engine_`` (``None`` until the first forward pass), and takes the
    ``backend`` and ``device`` arguments.
    """

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet; call fit with "
                                 "the training inputs before transform.")

    def engine(self):
        """The inference engine of the fitted network, built on first use."""
        self._check_fitted()
        if self.engine_ is None:
            self.engine_ = make_engine(self.network_, self.preprocessor_.item_shape, self.backend,
                                       self.device, self._onnx_path())
        return self.engine_

    def _onnx_path(self) -> Path | None:
        """Where an exported ONNX graph is kept (``None``: a temporary folder)."""
        return None

    def _progress(self, total: int, unit: str):
        """A progress bar over ``total`` inputs when ``progress`` is on, else ``None``."""
        if not getattr(self, "progress", False):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="features", unit=unit, leave=False)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        self._check_fitted()
        return np.array([f"feature{i}" for i in range(self.n_features_out_)], dtype=object)
