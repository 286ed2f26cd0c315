"""Headless mode: a frozen pretrained network as featurizer, then a scikit-learn head.

:class:`Featurizer` is a scikit-learn transformer (it drops into a ``Pipeline`` or
``GridSearchCV``). Features of image files are cached on disk, keyed by the file's content, the
network and its preprocessing, so a second run does not compute them again; an interrupted run
keeps what it computed.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .._utils import atomic_write, sha256_bytes, sha256_json
from ..data.views import TTA_GROUPS, resolve_tta
from ..exceptions import ConfigError
from ..inference import infer
from ..models import create_model

logger = logging.getLogger(__name__)

FEATURE_VERSION = 2  # bump when the featurization itself changes, to invalidate caches


def default_cache_dir() -> Path:
    """``$SIGCLASS_CACHE_DIR``, else ``~/.cache/sigclass``."""
    env = os.environ.get("SIGCLASS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sigclass"


class FeatureCache:
    """Vectors on disk, keyed by content hash, in append-only safetensors shards.

    Each shard holds a ``(n, d)`` matrix and the list of its keys; shards are written atomically,
    so a crash loses at most the shard being written.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._vectors: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            from safetensors import safe_open
            from safetensors.numpy import load_file

            self._vectors = {}
            for shard in sorted(self.folder.glob("shard-*.safetensors")):
                try:
                    with safe_open(str(shard), framework="numpy") as handle:
                        keys = json.loads(handle.metadata()["keys"])
                    matrix = load_file(str(shard))["features"]
                except Exception as exc:  # noqa: BLE001 - a damaged shard is recomputed
                    logger.warning("Ignoring damaged feature cache shard %s: %s", shard, exc)
                    continue
                self._vectors.update(zip(keys, matrix, strict=True))
        return self._vectors

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        vectors = self._load()
        return {k: vectors[k] for k in keys if k in vectors}

    def put(self, keys: list[str], matrix: np.ndarray) -> None:
        if not keys:
            return
        from safetensors.numpy import save_file

        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        shard = self.folder / f"shard-{uuid.uuid4().hex}.safetensors"
        atomic_write(shard, lambda p: save_file({"features": matrix}, str(p),
                                                metadata={"keys": json.dumps(keys)}))
        self._load().update(zip(keys, matrix, strict=True))

    def __len__(self) -> int:
        return len(self._load())


class Featurizer(TransformerMixin, BaseEstimator):
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
            items (see :func:`choose_tta`). ``True`` is ``"hflip"``.
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

        Nothing else is learned: the network stays frozen.
        """
        from ..data.transforms import ImagePreprocessor, image_data_config

        tta = resolve_tta(self.tta)
        if tta == "auto" and (X is None or y is None):
            raise ConfigError("tta='auto' chooses the test-time views from labeled data: call "
                              "fit(X, y) with the training images and labels, or set tta to "
                              "'none', 'hflip', 'flips' or 'dihedral'.")
        self.network_ = _featurizer_network(self.model, self.pretrained, self.weights, self.pooling)
        base = image_data_config(self.network_, self.image_size, self.resize, self.crop_pct, "none")
        self.preprocessor_ = ImagePreprocessor(base)
        self.n_features_out_ = int(self.network_.num_features)
        self.cache_key_ = sha256_json({
            "model": self.model, "weights": _state_hash(self.network_),
            "data_config": base, "version": FEATURE_VERSION,
        })[:24]
        self.engine_ = None
        self.tta_scores_: dict[str, float] = {}
        if tta == "auto":
            tta, self.tta_scores_ = choose_tta(self, X, y)
        self.tta_ = tta
        self.data_config_ = {**base, "tta": tta}
        return self

    def engine(self):
        """The inference engine (an ONNX export is cached beside the features)."""
        if self.engine_ is None:
            from ..inference import make_engine

            onnx_path = None
            if self._cache_folder() is not None:
                onnx_path = self._cache_folder() / "backbone.onnx"
            self.engine_ = make_engine(self.network_, self.preprocessor_.item_shape, self.backend,
                                       self.device, onnx_path)
        return self.engine_

    def _cache_folder(self) -> Path | None:
        if self.cache_dir is False:
            return None
        base = default_cache_dir() if self.cache_dir in (None, True) else Path(self.cache_dir)
        return base / "features" / f"{self.model}-{self.cache_key_}"

    def transform(self, X) -> np.ndarray:
        """Feature matrix ``(n_images, n_features_out_)``, averaged over the views of ``tta_``;
        file paths hit the cache."""
        if not hasattr(self, "network_"):
            self.fit()
        return self.view_features(X, TTA_GROUPS[self.tta_]).mean(axis=0)

    def view_features(self, X, views: tuple[str, ...]) -> np.ndarray:
        """Features of each view of each image: ``(len(views), n_images, n_features_out_)``."""
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
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="features", unit="img", leave=False)
        pending_keys, pending_rows = [], []
        engine = self.engine()
        for begin in range(0, len(todo), self.batch_size):
            index = todo[begin:begin + self.batch_size]
            batch = self.preprocessor_([items[i] for i in index])
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

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array([f"feature{i}" for i in range(self.n_features_out_)], dtype=object)


TTA_SAMPLE = 300  # labeled items on which tta="auto" compares the view groups
AUTO_TTA_GROUPS = ("none", "hflip", "flips")  # "dihedral" (8 views) only when asked for
TTA_MARGIN = 0.005  # a group with more views must beat the smaller one by more than this


def choose_tta(featurizer: Featurizer, X, y, seed: int = 0) -> tuple[str, dict[str, float]]:
    """The TTA group whose view-averaged features a linear classifier separates best.

    On a stratified sample of up to :data:`TTA_SAMPLE` items, each group of
    :data:`AUTO_TTA_GROUPS` is scored by the cross-validated accuracy of a ridge classifier
    (standardized features, regularization chosen by efficient leave-one-out); a group with more
    views must beat the best smaller one by more than :data:`TTA_MARGIN`, so a data set without
    the symmetry pays for no extra passes. The views computed here are cached and reused.

    Measured on ELPV's demo split (Lite2, logistic head): no views 75.0 % test accuracy, the
    four flips averaged 78.7 %; fridgeObjects (5-fold CV on all 134 photos): 95.6 % and 97.8 %
    (``bench/bench_featurizer.py``).

    Returns:
        ``(group, {group: cv_accuracy})``.
    """
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    items = featurizer.preprocessor_.as_list(X)
    labels = np.asarray(y)
    index = np.arange(len(items))
    if len(items) > TTA_SAMPLE:
        index, _ = train_test_split(index, train_size=TTA_SAMPLE, stratify=labels, random_state=seed)
    counts = np.unique(labels[index], return_counts=True)[1]
    folds = int(min(5, counts.min()))
    if folds < 2 or len(counts) < 2:
        logger.info("tta='auto': too few labeled items per class to compare views; using 'none'")
        return "none", {}
    views = TTA_GROUPS[AUTO_TTA_GROUPS[-1]]
    per_view = featurizer.view_features([items[i] for i in index], views)
    scores: dict[str, float] = {}
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for group in AUTO_TTA_GROUPS:
        features = per_view[[views.index(v) for v in TTA_GROUPS[group]]].mean(axis=0)
        head = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=np.logspace(-1, 5, 13)))
        scores[group] = float(cross_val_score(head, features, labels[index], cv=splitter).mean())
    best = pick_tta_group(scores)
    logger.info("tta='auto' chose %r (cross-validated accuracy on %d items: %s)", best, len(index),
                ", ".join(f"{g} {s:.3f}" for g, s in scores.items()))
    return best, scores


def pick_tta_group(scores: dict[str, float]) -> str:
    """The group of ``scores`` (in order of more views) that wins: each larger group must beat
    the best smaller one by more than :data:`TTA_MARGIN`."""
    groups = list(scores)
    best = groups[0]
    for group in groups[1:]:
        if scores[group] > scores[best] + TTA_MARGIN:
            best = group
    return best


def _featurizer_network(model: str, pretrained: bool, weights, pooling: str):
    """The frozen network of a featurizer, pooled as ``pooling`` says."""
    from ..models.stage_pool import FEATURE_POOLS, StagePooled, supports_stages

    if pooling not in (*FEATURE_POOLS, "auto"):
        raise ConfigError(f"The 'pooling' option must be one of 'final', 'stages', 'auto'. "
                          f"Got {pooling!r}.")
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
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def make_head(name: str = "logreg", cv_folds: int = 5, seed: int = 0, n_jobs: int | None = None,
              calibration_folds: int = 5, params: dict[str, Any] | None = None):
    """A scikit-learn classifier whose regularization is chosen by cross-validation.

    The estimator is ``GridSearchCV`` over a ``StandardScaler`` + classifier pipeline with
    stratified folds on the training set; its ``best_estimator_`` is the head that gets saved.

    Args:
        name: ``logreg``, ``linear_svm``, ``rbf_svm``, ``random_forest``, ``hist_gb`` or ``ridge``.
        cv_folds: Cross-validation folds.
        seed: Seed of the folds and of randomized models.
        n_jobs: Parallel jobs of the search.
        calibration_folds: Folds of the probability calibration of SVM and ridge heads.
        params: Fixed settings of the classifier that replace its searched values, e.g.
            ``{"C": 0.1}`` (logreg, SVMs) or ``{"alpha": 1.0}`` (ridge).
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, RidgeClassifierCV
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    grids: dict[str, tuple[Any, dict[str, list]]] = {
        "logreg": (LogisticRegression(max_iter=3000), {"clf__C": [0.001, 0.01, 0.1, 1.0, 10.0]}),
        "linear_svm": (CalibratedClassifierCV(LinearSVC(max_iter=5000, random_state=seed), ensemble=False,
                                              cv=calibration_folds),
                       {"clf__estimator__C": [0.0001, 0.001, 0.01, 0.1, 1.0]}),
        "rbf_svm": (CalibratedClassifierCV(SVC(kernel="rbf", gamma="scale", random_state=seed), ensemble=False,
                                           cv=calibration_folds),
                    {"clf__estimator__C": [0.1, 1.0, 10.0, 100.0]}),
        "random_forest": (RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=n_jobs),
                          {"clf__max_features": ["sqrt", 0.05], "clf__min_samples_leaf": [1, 3]}),
        "hist_gb": (HistGradientBoostingClassifier(max_iter=200, early_stopping=True, random_state=seed),
                    {"clf__learning_rate": [0.05, 0.1], "clf__l2_regularization": [0.0, 1.0]}),
        "ridge": (CalibratedClassifierCV(RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)), ensemble=False,
                                         cv=calibration_folds),
                  {}),
    }
    if name not in grids:
        options = ", ".join(f"'{n}'" for n in grids)
        raise ConfigError(f"The 'head' option must be one of {options}. Got {name!r}.")
    estimator, grid = grids[name]
    grid = _fix_params(name, estimator, grid, params or {})
    pipeline = Pipeline([("scale", StandardScaler()), ("clf", estimator)])
    folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    return GridSearchCV(pipeline, grid or {"scale__with_mean": [True]}, cv=folds,
                        scoring="accuracy", n_jobs=n_jobs, refit=True)


def _fix_params(name: str, estimator, grid: dict[str, list], params: dict[str, Any]) -> dict[str, list]:
    """The search grid with the values in ``params`` fixed (ridge's ``alpha`` fixes its alphas)."""
    from sklearn.calibration import CalibratedClassifierCV

    # A calibrated classifier's settings are its inner estimator's (a random forest's `estimator`
    # is its tree template, not a wrapped classifier).
    inner = estimator.estimator if isinstance(estimator, CalibratedClassifierCV) else None
    target = inner if inner is not None else estimator
    prefix = "clf__estimator__" if inner is not None else "clf__"
    valid = sorted(target.get_params(deep=False))
    grid = dict(grid)
    for key, value in params.items():
        if name == "ridge" and key == "alpha":
            grid[prefix + "alphas"] = [[float(value)]]
            continue
        if key not in valid:
            extra = ", 'alpha'" if name == "ridge" else ""
            raise ConfigError(f"The 'head_params' key {key!r} is not a setting of the {name!r} head; "
                              f"use one of {', '.join(repr(v) for v in valid)}{extra}.")
        grid[prefix + key] = [value]
    return grid


AUTO_RIDGE_FEATURES = 5000  # wider features (MiniRocket's ~10,000) get a ridge head under "auto"


def resolve_head(name: str, n_features: int) -> str:
    """``"auto"``: logistic regression, or ridge for features wider than 5,000, where logistic
    regression is slow and ridge is the MiniRocket paper's choice; other names unchanged."""
    if name != "auto":
        return name
    return "ridge" if n_features > AUTO_RIDGE_FEATURES else "logreg"


def fit_head(name: str, features: np.ndarray, labels: np.ndarray, cv_folds: int = 5, seed: int = 0,
             params: dict[str, Any] | None = None):
    """Fit a head by cross-validated search; returns ``(best_pipeline, search_summary)``.

    ``params`` fixes settings of the classifier (see :func:`make_head`); the summary's
    ``cv_accuracy`` is then the cross-validated accuracy of exactly that head. A ``class_weight``
    dict (class name → weight) is applied as sample weights, which every head takes.
    """
    name = resolve_head(name, features.shape[1])
    counts = np.unique(labels, return_counts=True)[1]
    folds = int(min(cv_folds, counts.min()))
    if folds < 2:
        raise ConfigError(
            "Headless mode needs at least 2 training items per class for cross-validation; "
            f"the smallest class has {counts.min()}. Add data or lower --val-size/--test-size."
        )
    # Calibration splits each training fold again: no more folds than its smallest class has items.
    smallest_in_fold = int(counts.min()) - -(-int(counts.min()) // folds)
    params = dict(params or {})
    weights = params.pop("class_weight", None) if isinstance(params.get("class_weight"), dict) else None
    search = make_head(name, folds, seed, calibration_folds=max(2, min(5, smallest_in_fold)),
                       params=params)
    if weights is not None:  # per-class weights as sample weights: every head, calibrated ones too
        sample_weight = np.array([weights[label] for label in labels], dtype=np.float64)
        search.fit(features, labels, clf__sample_weight=sample_weight)
    else:
        search.fit(features, labels)
    summary = {
        "head": name, "cv_folds": folds, "best_params": search.best_params_,
        "cv_accuracy": float(search.best_score_),
    }
    return search.best_estimator_, summary
