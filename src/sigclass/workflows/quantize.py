"""INT8 quantization of a trained model's ONNX graph, calibrated on the run's own data.

ONNX Runtime's static quantization (:func:`onnxruntime.quantization.quantize_static`: QDQ
format, per-channel int8 weights, uint8 activations whose ranges come from calibration) runs on
a sample of the run's training items, read through the stored split. The int8 graph is then
scored against the fp32 graph on the run's test part: accuracy, macro-F1, how far the
probabilities move and both speeds go into a report (``quantization.json`` in the run folder and
beside the cached graph). A graph that loses more than ``max_accuracy_drop`` points of accuracy
is kept for inspection but refused by ``--precision int8``
(:meth:`sigclass.Predictor.use_backend`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import atomic_write, write_json
from ..artifacts import find_model_dir
from ..choices import check_choice
from ..config import RunConfig, load_config
from ..data.split import Split
from ..evaluation.metrics import classification_metrics
from ..exceptions import ConfigError
from ..inference import OnnxEngine, infer
from ..loading import load
from ..predictor import onnx_cache_path, quantized_paths
from .update import run_dataset

logger = logging.getLogger(__name__)

__all__ = ["quantize_model"]


CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def quantize_model(model: str | Path, output: str | Path | None = None, n_calibration: int = 200,
                   max_accuracy_drop: float = 1.0, batch_size: int = 32, seed: int = 0,
                   calibration_method: str = "minmax") -> dict[str, Any]:
    """Quantize ``model``'s network to int8 and report what it costs.

    Args:
        model: A run folder (its ``split.json`` and ``config.yaml`` give the calibration and test
            items) or the model folder inside one.
        output: Also copy the int8 graph there (it is always cached beside the fp32 graph).
        n_calibration: Training items the activation ranges are calibrated on.
        max_accuracy_drop: Most accuracy points the int8 graph may lose on the test part and
            still be used by ``--precision int8``.
        batch_size: Batch size of calibration and scoring.
        seed: Seed of the calibration sample.
        calibration_method: How activation ranges are read from the calibration items:
            ``minmax`` (their extremes), ``percentile`` (99.999th percentile of magnitudes) or
            ``entropy`` (the range that keeps the histogram's information).

    Returns:
        The report (also written to ``quantization.json``): fp32 and int8 accuracy, macro-F1,
        the mean and largest probability difference, items per second of both graphs, and
        ``accepted``.

    Raises:
        ConfigError: No calibration data (not a run folder, or a run without training items),
            or a network that cannot be exported to ONNX.
    """
    if not 1 <= n_calibration <= 10_000:
        raise ConfigError(f"The 'calibration_items' option takes 1 to 10,000 items. Got {n_calibration}.")
    check_choice("calibration_method", calibration_method, CALIBRATION_METHODS)
    if not 0 <= max_accuracy_drop <= 100:
        raise ConfigError("The 'max_accuracy_drop' option is in accuracy points, 0 to 100. "
                          f"Got {max_accuracy_drop}.")
    folder = find_model_dir(model)
    run_dir = folder.parent
    if not ((run_dir / "split.json").is_file() and (run_dir / "config.yaml").is_file()):
        raise ConfigError(f"Cannot quantize '{model}': int8 calibration needs the run's own data, "
                          "and this model folder is not inside a run folder (no split.json and "
                          "config.yaml beside it). Quantize the run folder `sigclass train` wrote.")
    predictor = load(folder)
    if getattr(predictor, "members", None):
        raise ConfigError(f"'{model}' is an ensemble; quantize each member's run instead.")
    if not getattr(predictor.network, "onnx_exportable", True):
        raise ConfigError(f"'{predictor.model_name}' cannot be exported to ONNX (it runs code "
                          "outside PyTorch), so it has no int8 graph.")
    cfg = RunConfig.from_dict(load_config(run_dir / "config.yaml"))
    dataset = run_dataset(run_dir, cfg)  # with the items an update added
    parts = Split.load(run_dir / "split.json").indices(dataset)
    if not len(parts["train"]) or not len(parts["test"]):
        raise ConfigError(f"Cannot quantize '{model}': its split has no training or no test items "
                          "to calibrate and check the int8 graph on.")

    predictor.use_backend("onnx")  # exports the fp32 graph once, to the cache
    fp32_path = onnx_cache_path(predictor)
    int8_path, report_path = quantized_paths(predictor)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(parts["train"], size=min(n_calibration, len(parts["train"])),
                                replace=False))
    calibration = _preprocessed(predictor, dataset.subset(chosen), batch_size)
    started = time.perf_counter()
    _quantize(fp32_path, int8_path, calibration, calibration_method)
    quantize_seconds = time.perf_counter() - started

    test = dataset.subset(parts["test"])
    batches = _preprocessed(predictor, test, batch_size)
    results = _score(predictor, {"fp32": OnnxEngine(fp32_path), "int8": OnnxEngine(int8_path)},
                     batches)
    y_true = list(test.labels)
    metrics = {name: classification_metrics(y_true, _labels(predictor, proba), predictor.classes, proba)
               for name, (proba, _) in results.items()}
    difference = np.abs(results["int8"][0] - results["fp32"][0])
    drop = 100.0 * (metrics["fp32"]["accuracy"] - metrics["int8"]["accuracy"])
    report = {
        "model": predictor.model_name,
        "graph": int8_path.name,
        "format": f"QDQ, per-channel int8 weights, uint8 activations ({calibration_method} calibration)",
        "calibration_method": calibration_method,
        "calibration_items": int(len(chosen)),
        "test_items": int(len(test)),
        "accuracy": {k: m["accuracy"] for k, m in metrics.items()},
        "f1_macro": {k: m["f1_macro"] for k, m in metrics.items()},
        "accuracy_drop_points": drop,
        "probability_difference": {"mean": float(difference.mean()), "max": float(difference.max())},
        "items_per_second": {k: v[1] for k, v in results.items()},
        "speedup": results["int8"][1] / results["fp32"][1],
        "quantize_seconds": quantize_seconds,
        "max_accuracy_drop": max_accuracy_drop,
        "accepted": drop <= max_accuracy_drop,
    }
    write_json(report_path, report)
    write_json(run_dir / "quantization.json", report)
    if output is not None:
        output = Path(output)
        atomic_write(output, lambda tmp: tmp.write_bytes(int8_path.read_bytes()))
        report["path"] = str(output)
    if not report["accepted"]:
        logger.warning("The int8 graph loses %.1f accuracy points on the test part (more than "
                       "--max-accuracy-drop %.1f); --precision int8 will refuse it", drop,
                       max_accuracy_drop)
    return report


def _preprocessed(predictor, dataset, batch_size: int) -> list[np.ndarray]:
    items = dataset.model_inputs()
    items = predictor.preprocessor.as_list(items)
    return [np.ascontiguousarray(predictor.preprocessor(items[i:i + batch_size]).numpy(), dtype=np.float32)
            for i in range(0, len(items), batch_size)]


def _quantize(fp32_path: Path, int8_path: Path, batches: list[np.ndarray], method: str) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    input_name = OnnxEngine(fp32_path).input_name

    if method != "minmax":  # histogram calibrators stack the batches: all of one size
        batches = [batch[i:i + 1] for batch in batches for i in range(len(batch))]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.pending = iter(batches)

        def get_next(self):
            batch = next(self.pending, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory(prefix="sigclass-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)

        def write(path: Path) -> None:
            quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8,
                            calibrate_method={"minmax": CalibrationMethod.MinMax,
                                              "percentile": CalibrationMethod.Percentile,
                                              "entropy": CalibrationMethod.Entropy}[method])

        int8_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(int8_path, write)


def _score(predictor, engines: dict, batches: list[np.ndarray], repeats: int = 3) -> dict:
    """Per engine: the probabilities of the test part and its best items per second. The
    engines are timed in turn, repeat after repeat, so that a CPU shared with other work slows
    both alike."""
    views = predictor.preprocessor.views
    outputs = {name: [infer(engine, batch, views) for batch in batches]  # also warms up
               for name, engine in engines.items()}
    n = sum(len(b) for b in batches)
    best = dict.fromkeys(engines, float("inf"))
    for _ in range(repeats):
        for name, engine in engines.items():
            start = time.perf_counter()
            for batch in batches:
                infer(engine, batch, views)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: (predictor.probabilities_from_outputs(np.concatenate(outputs[name])),
                   n / best[name] if best[name] > 0 else float("nan")) for name in engines}


def _labels(predictor, proba: np.ndarray) -> list[str]:
    return list(np.asarray(predictor.classes, dtype=object)[proba.argmax(axis=1)])
