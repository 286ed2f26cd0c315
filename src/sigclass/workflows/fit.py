"""The two ways a run learns: a featurizer and a classic head (``headless``), or a network
trained by the :class:`~sigclass.training.trainer.Trainer` (``finetune``, ``scratch``).

Both ask the data's modality for what differs (featurizer, network, training tensors) and
return ``(predictor, history, summary)``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .._utils import write_json
from ..config import RunConfig
from ..evaluation.calibration import fit_temperature
from ..evaluation.conformal import fit_threshold
from ..evaluation.plots import plot_training_curves
from ..modalities import modality_of
from ..predictor import Predictor
from ..training import distributed
from ..training.heads import fit_head, out_of_fold_proba
from ..training.schedule import head_class_weight
from ..training.trainer import Trainer
from .fit_ood import fit_ood, fit_ood_network, reference_sample

logger = logging.getLogger(__name__)


def fit_headless(cfg: RunConfig, dataset, parts, progress: bool):
    """A featurizer fitted on the training items (frozen for images), then a cross-validated
    head on its features."""
    modality = modality_of(dataset)
    fit_part, val = head_parts(dataset, parts)
    featurizer = modality.fit_featurizer(modality.featurizer(cfg, progress), fit_part)
    predictor = Predictor(featurizer.network_, dataset.classes, featurizer.data_config_,
                          modality=dataset.modality, mode="headless", device=cfg.device,
                          backend=cfg.backend, engine=featurizer.engine())
    return fit_head_parts(cfg, predictor, lambda part: featurizer.transform(part.model_inputs()),
                          fit_part, val, modality.featurizer_summary(featurizer), len(parts["train"]))


def head_parts(dataset, parts):
    """``(fit_part, val)``: the items a head learns from, and the validation items it never sees
    (``None`` unless the user set them aside)."""
    # Cross-validation on the training data picks the head's regularization, so the validation
    # part is not needed for model selection: the head learns from both.
    # A validation part the user set aside themselves (a val/ folder, --val-dir) is not trained on.
    predefined = getattr(dataset, "predefined", None)
    user_val = predefined is not None and "val" in predefined.parts
    fit_part = dataset.subset(parts["train"] if user_val else np.concatenate([parts["train"], parts["val"]]))
    val = dataset.subset(parts["val"]) if user_val and len(parts["val"]) else None
    return fit_part, val


def fit_head_parts(cfg: RunConfig, predictor, features_of, fit_part, val, featurizer_summary: dict,
                   n_train: int):
    """Everything of a headless ``predictor`` that depends on its head or its training items,
    fitted on the features of ``fit_part``: the cross-validated head, its prediction-set
    threshold and the out-of-distribution reference and threshold.

    ``sigclass update`` refits a saved model through here. ``features_of(part)``: the features
    of a dataset's items; ``n_train``: how many of ``fit_part``'s first items are the training
    part (the rest, the validation part, calibrates the OOD threshold when ``val`` is None).
    Returns ``(predictor, history, summary)`` as the fits of a run do.
    """
    features = features_of(fit_part)
    # One BLAS thread: a head's matrices are small, and threads that wait for each other on
    # shared cores made its search up to 50 times slower (bench/results/update.json).
    with threadpool_limits(1, user_api="blas"):
        return _fit_head_parts(cfg, predictor, features_of, features, fit_part, val,
                               featurizer_summary, n_train)


def _fit_head_parts(cfg: RunConfig, predictor, features_of, features, fit_part, val,
                    featurizer_summary: dict, n_train: int):
    params = dict(cfg.head_params)
    class_weight, reason = head_class_weight(cfg.train.class_weights, fit_part.labels)
    if class_weight is not None:  # the same option as for networks
        params.setdefault("class_weight", class_weight)
    logger.info("Class weights of the head: %s", reason if class_weight is not None else f"none, {reason}")
    head, summary = fit_head(cfg.head, features, fit_part.labels, cfg.cv_folds, cfg.seed, params)
    predictor.head = head
    summary = {**summary, "class_weights": class_weight, "class_weights_reason": reason,
               **featurizer_summary}
    weights = params.get("class_weight") if isinstance(params.get("class_weight"), dict) else None
    conformal = _conformalize_headless(cfg, predictor, features_of, features, fit_part, val,
                                       summary["cv_folds"], weights)
    ood = _ood_headless(cfg, predictor, features_of, features, fit_part, val, n_train)
    return predictor, [], {"head": summary, "conformal": conformal, "ood": ood}


def _ood_headless(cfg: RunConfig, predictor, features_of, features, fit_part, val, n_train: int) -> dict:
    """The OOD score of a headless predictor: its reference is the training part's features,
    its threshold the validation part's (held out from the reference, if not from the head)."""
    if cfg.ood == "off":
        return {"method": "off"}
    if val is not None:  # the user's validation part: the head never saw it
        reference, labels = features, fit_part.labels
        held_out = features_of(val) if len(val) else None
    else:  # fit_part is the training part, then the validation part
        reference, labels, held_out = features[:n_train], fit_part.labels[:n_train], features[n_train:]
    keep = reference_sample(len(reference), cfg.seed)
    return fit_ood(cfg, predictor, reference[keep], [labels[i] for i in keep], held_out)


def _conformalize_headless(cfg: RunConfig, predictor, features_of, features, fit_part, val,
                           cv_folds: int, weights) -> dict:
    """The prediction-set threshold of a headless predictor: calibrated on the validation part
    ``val`` when the head never saw it, else on the head's out-of-fold probabilities on its own
    training items (the same folds and sample weights as its search)."""
    if val is not None:  # held out from the head: split conformal as for networks
        proba = predictor.probabilities_from_outputs(features_of(val))
        return conformalize(predictor, proba, val.labels, cfg.coverage,
                            "the validation part (not trained on)")
    proba = out_of_fold_proba(predictor.head, features, fit_part.labels, cv_folds, cfg.seed, weights)
    order = list(np.unique(fit_part.labels))  # the columns of cross_val_predict
    proba = proba[:, [order.index(c) for c in predictor.classes]]
    return conformalize(predictor, proba, fit_part.labels, cfg.coverage,
                        "out-of-fold probabilities of the head on its training items")


def fit_network(cfg: RunConfig, dataset, parts, run_dir: Path, progress: bool, callbacks,
                resume_from):
    """The run's network trained on the training part, selected on the validation part."""
    modality = modality_of(dataset)
    network, data_config = modality.network(cfg, dataset, parts["train"])
    data_config, sized = modality.fit_to_budget(cfg, network, data_config, len(parts["train"]))
    train_set = modality.training_set(dataset.subset(parts["train"]), data_config, cfg)
    val_set = dataset.subset(parts["val"] if len(parts["val"]) else parts["train"]).to_torch(data_config)
    trainer = Trainer(network, cfg.train, cfg.mode, cfg.device, list(callbacks),
                      checkpoint_dir=run_dir / "checkpoints", seed=cfg.seed, progress=progress,
                      budget=modality.budget)
    trainer.fit(train_set, val_set, resume=resume_from)
    if distributed.is_main_process():
        write_json(run_dir / "history.json", trainer.history_)
        plot_training_curves(trainer.history_, run_dir / "curves.png")
    predictor = Predictor(trainer.network.cpu(), dataset.classes, data_config,
                          modality=dataset.modality, mode=cfg.mode, device=cfg.device)
    extra = trainer.summary()  # the plan (epochs_planned, selection, class weights) and its outcome
    extra.update(sized)
    val = dataset.subset(parts["val"])
    logits = predictor.transform(val.model_inputs()) if len(val) else None
    extra["calibration"] = calibrate(predictor, val, logits)
    # the temperature-scaled probabilities of the validation part calibrate the prediction sets
    proba = predictor.probabilities_from_outputs(logits) if len(val) else np.zeros((0, predictor.n_classes))
    extra["conformal"] = conformalize(predictor, proba, val.labels if len(val) else [], cfg.coverage,
                                      "the validation part (temperature-scaled probabilities)")
    extra["ood"] = fit_ood_network(cfg, predictor, dataset, parts)
    return predictor, trainer.history_, extra


def calibrate(predictor, val, logits: np.ndarray | None = None) -> dict:
    """Fit the temperature of ``predictor``'s logits on the validation items ``val`` (see
    :mod:`sigclass.evaluation.calibration`); returns the fit's summary. ``logits``: the
    network's outputs on ``val``, when they were already computed."""
    if not len(val):
        return {"temperature": 1.0, "n": 0, "reason": "no validation part"}
    if logits is None:
        logits = predictor.transform(val.model_inputs())
    index = {c: i for i, c in enumerate(predictor.classes)}
    temperature, summary = fit_temperature(logits, np.array([index[c] for c in val.labels]))
    predictor.temperature = temperature
    return {"temperature": temperature, **summary}


def conformalize(predictor, proba: np.ndarray, labels, coverage: float, source: str) -> dict:
    """Set the prediction-set threshold of ``predictor`` from the held-out probabilities
    ``proba`` of items labelled ``labels`` (see :mod:`sigclass.evaluation.conformal`); returns
    it with where the calibration items came from."""
    index = {c: i for i, c in enumerate(predictor.classes)}
    threshold = fit_threshold(proba, np.array([index[c] for c in labels], dtype=int), coverage)
    predictor.conformal = threshold
    if threshold["qhat"] is None:
        logger.warning("No prediction-set threshold: %s", threshold["reason"])
    return {**threshold, "calibrated_on": source}
