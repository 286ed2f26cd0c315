"""Headless mode for images: a frozen pretrained network as featurizer, then a scikit-learn head.

:class:`Featurizer` is a scikit-learn transformer (it drops into a ``Pipeline`` or
``GridSearchCV``). Features of image files are cached on disk
(:class:`~sigclass.training.feature_cache.FeatureCache`), keyed by the file's content, the
network and its preprocessing, so a second run does not compute them again; an interrupted run
keeps what it computed.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import default_cache_dir, prefetched, sha256_bytes, sha256_json
from ..choices import POOLINGS, check_choice
from ..data.image_preprocess import ImagePreprocessor, image_data_config
from ..data.views import TTA_GROUPS, resolve_tta
from ..exceptions import ConfigError
from ..inference import GRAPH_VERSION, infer
from ..models import create_model
from ..models.stage_pool import StagePooled, supports_stages
from .feature_cache import FeatureCache
from .featurizer import BaseFeaturizer
from .tta import choose_tta

logger = logging.getLogger(__name__)

FEATURE_VERSION = 2  # bump when the featurization itself changes, to invalidate caches


class Featurizer(BaseFeaturizer):
    """Frozen pretrained network → one pooled feature vector per image.

    Args:
        model: Registry or timm name of the backbone.
        pretrained: Load pretrained weights (the point of headless mode).
        weights: Local weights file for the backbone.
        image_size: Square input size; ``None`` keeps the network's own.
        resize: ``"center_crop"``, ``"squash"`` or ``"letterbox"``; ``None`` follows the network's pretraining.
        crop_pct: Centre-crop fraction; ``None`` takes the network's own.
        tta: The views of each image whose features are averaged (:mod:`sigclass.data.views`):
            ``"none"``, ``"hflip"``, ``"flips"``, ``"dihedral"``, or ``"auto"``, which lets
            ``fit(X, y)`` choose among ``none``, ``hflip`` and ``flips`` by the cross-validated
            accuracy of a linear classifier on a sample of up to :data:`TTA_SAMPLE` labeled
            items (see :func:`~sigclass.training.tta.choose_tta`). ``True`` is ``"hflip"``.
        batch_size: Images per forward pass.
        backend: ``"auto"`` (ONNX Runtime on a CPU, PyTorch on CUDA), ``"torch"`` or ``"onnx"``.
        cache_dir: Feature cache folder; ``None`` uses :func:`default_cache_dir`, ``False`` disables it.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        progress: Show a progress bar.
        pooling: ``"final"``: the mean of the last feature map; ``"stages"``: the mean and max
            of the last three stage maps and of the final map
            (:class:`~sigclass.models.stage_pool.StagePooled`); ``"auto"``: ``stages`` where the
            backbone has stage maps (timm networks), else ``final``.

    Attributes:
        network_: The frozen backbone (classifier removed).
        data_config_: Its preprocessing, with the TTA group in use (``"tta"``).
        tta_: The TTA group in use.
        tta_scores_: Under ``tta="auto"``: the cross-validated accuracy of each group tried.
        n_features_out_: Width of the feature vectors.
        cache_key_: Hash of backbone, weights and preprocessing that keys the cache (each view
            of an image is cached on its own, so any TTA group reuses what was computed).
    """

    def __init__(
        self,
        model: str = "efficientnet_lite0",
        pretrained: bool = True,
        weights: str | None = None,
        image_size: int | None = None,
        resize: str | None = None,
        crop_pct: float | None = None,
        tta: str | bool = "none",
        batch_size: int = 32,
        backend: str = "auto",
        cache_dir: str | Path | bool | None = None,
        device: str | None = "auto",
        progress: bool = False,
        pooling: str = "final",
    ):
        self.model = model
        self.pretrained = pretrained
        self.weights = weights
        self.image_size = image_size
        self.resize = resize
        self.crop_pct = crop_pct
        self.tta = tta
        self.batch_size = batch_size
        self.backend = backend
        self.cache_dir = cache_dir
        self.device = device
        self.progress = progress
        self.pooling = pooling

    def fit(self, X=None, y=None) -> Featurizer:
        """Build the frozen network; under ``tta="auto"`` choose the views from ``X`` and ``y``.

        Nothing else is learned: the network stays frozen, so ``X`` may be left out otherwise.
        """
        tta = resolve_tta(self.tta)
        if tta == "auto" and (X is None or y is None):
            raise ConfigError("tta='auto' chooses the test-time views from labeled data: call "
                              "fit(X, y) with the training images and labels, or set tta to "
                              "'none', 'hflip', 'flips' or 'dihedral'.")
        network = _featurizer_network(self.model, self.pretrained, self.weights, self.pooling)
        base = image_data_config(network, self.image_size, self.resize, self.crop_pct, "none")
        self._set_network(network, base)
        if tta == "auto":
            tta, self.tta_scores_ = choose_tta(self, X, y)
        self.tta_ = tta
        self.data_config_ = {**base, "tta": tta}
        return self

    @classmethod
    def from_network(cls, network, data_config: dict[str, Any], model: str,
                     cache_dir: str | Path | bool | None = None, batch_size: int = 32,
                     backend: str = "auto", device: str | None = "auto",
                     progress: bool = False) -> Featurizer:
        """The fitted featurizer of a saved headless model: its frozen ``network`` and its
        preprocessing ``data_config`` (TTA included), as ``fit`` left them, so its features come
        from the cache that training filled. ``model``: the name it was trained under."""
        tta = data_config.get("tta", "none")
        featurizer = cls(model, False, None, tta=tta, batch_size=batch_size, backend=backend,
                         cache_dir=cache_dir, device=device, progress=progress)
        featurizer._set_network(network.eval(), {**data_config, "tta": "none"})
        featurizer.tta_ = tta
        featurizer.data_config_ = dict(data_config)
        return featurizer

    def _set_network(self, network, base: dict[str, Any]) -> None:
        """The frozen network, its preprocessing without views, and the cache key of both."""
        self.network_ = network
        self.preprocessor_ = ImagePreprocessor(base)
        self.n_features_out_ = int(network.num_features)
        self.cache_key_ = sha256_json({
            "model": self.model, "weights": _state_hash(network),
            "data_config": base, "version": FEATURE_VERSION,
        })[:24]
        self.engine_ = None
        self.tta_scores_: dict[str, float] = {}

    def _onnx_path(self) -> Path | None:
        """The ONNX export is cached beside the features."""
        folder = self._cache_folder()
        return None if folder is None else folder / f"backbone.v{GRAPH_VERSION}.onnx"

    def _cache_folder(self) -> Path | None:
        if self.cache_dir is False:
            return None
        base = default_cache_dir() if self.cache_dir in (None, True) else Path(self.cache_dir)
        return base / "features" / f"{self.model}-{self.cache_key_}"

    def transform(self, X) -> np.ndarray:
        """Feature matrix ``(n_images, n_features_out_)``, averaged over the views of ``tta_``;
        file paths hit the cache."""
        self._check_fitted()
        return self.view_features(X, TTA_GROUPS[self.tta_]).mean(axis=0)

    def view_features(self, X, views: tuple[str, ...]) -> np.ndarray:
        """Features of each view of each image: ``(len(views), n_images, n_features_out_)``."""
        self._check_fitted()
        items = self.preprocessor_.as_list(X)
        keys = [_content_key(item) for item in items]
        folder = self._cache_folder()
        cache = FeatureCache(folder) if folder is not None else None
        wanted = [_view_key(k, v) for k in keys if k is not None for v in views]
        found = cache.get(wanted) if cache is not None else {}
        out = np.zeros((len(views), len(items), self.n_features_out_), dtype=np.float32)
        missing: dict[int, list[int]] = {}  # item -> indices of its views still to compute
        for i, key in enumerate(keys):
            for j, view in enumerate(views):
                cached = found.get(_view_key(key, view)) if key is not None else None
                if cached is not None:
                    out[j, i] = cached
                else:
                    missing.setdefault(i, []).append(j)
        if missing:
            n_views = sum(len(v) for v in missing.values())
            logger.info("Featurizing %d of %d images (%d views; the rest cached)", len(missing),
                        len(items), n_views)
            self._compute(items, keys, views, missing, out, cache)
        return out

    def _compute(self, items, keys, views, missing, out, cache) -> None:
        todo = sorted(missing)
        chunk = max(self.batch_size, 256)  # write a cache shard every `chunk` vectors
        bar = self._progress(len(todo), "img")
        pending_keys, pending_rows = [], []
        engine = self.engine()
        chunks = [todo[begin:begin + self.batch_size] for begin in range(0, len(todo), self.batch_size)]
        # the next batch is read while the network runs this one
        for index, batch in prefetched(lambda index: self.preprocessor_([items[i] for i in index]), chunks):
            for j in sorted({j for i in index for j in missing[i]}):
                rows = [n for n, i in enumerate(index) if j in missing[i]]
                features = infer(engine, batch[rows] if len(rows) < len(index) else batch, (views[j],))
                for n, row in zip(rows, features, strict=True):
                    out[j, index[n]] = row
                    if keys[index[n]] is not None:
                        pending_keys.append(_view_key(keys[index[n]], views[j]))
                        pending_rows.append(row)
            if cache is not None and len(pending_keys) >= chunk:
                cache.put(pending_keys, np.stack(pending_rows))
                pending_keys, pending_rows = [], []
            if bar is not None:
                bar.update(len(index))
        if cache is not None and pending_keys:
            cache.put(pending_keys, np.stack(pending_rows))
        if bar is not None:
            bar.close()


def _featurizer_network(model: str, pretrained: bool, weights, pooling: str):
    """The frozen network of a featurizer, pooled as ``pooling`` says."""
    check_choice("pooling", pooling, POOLINGS)
    network = create_model(model, n_classes=0, pretrained=pretrained, weights=weights)
    if pooling == "final" or (pooling == "auto" and not supports_stages(network)):
        return network.eval()
    if not supports_stages(network):
        raise ConfigError(f"pooling='stages' needs a backbone with stage maps (a timm network); "
                          f"'{model}' has none. Use pooling 'final' or 'auto'.")
    spec = network.model_spec
    pooled = StagePooled(network)
    pooled.model_spec = {**spec, "kwargs": {**spec["kwargs"], "feature_pool": "stages"}}
    return pooled.eval()


def _view_key(content_key: str, view: str) -> str:
    return content_key if view == "id" else f"{content_key}:{view}"


def _content_key(item: Any) -> str | None:
    """Cache key of a file input: the hash of its bytes. Other inputs are not cached."""
    if isinstance(item, str | Path):
        try:
            return sha256_bytes(Path(item).read_bytes())
        except OSError:
            return None
    return None


def _state_hash(network) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
