"""Input drift: how far recent inputs are from the ones a model was tested on.

Two scores summarise every input in one number each:

- ``input_rms``: the root mean square of the preprocessed input, in units of the training
  normalisation (about 1 for a signal like the training ones). It moves when inputs are offset,
  rescaled, saturated or blank, whatever the model makes of them.
- ``confidence``: the largest class probability (rounded to 3 decimals, so that the small
  differences between inference engines never move an input from one bin to the next). It
  moves when the model meets inputs unlike its training classes.

The statistic is the population stability index (PSI) of each score: the reference's quantile
bins, fitted at training time on the test part, hold equal shares of it; a window of recent
inputs is binned the same way and ``PSI = sum((a - e) * ln(a / e))`` over the bins, with ``a``
the window's share and ``e`` the reference's (both at least :data:`EPSILON`). PSI needs no
assumption about the score's distribution, costs one ``searchsorted`` per input, and has a
well-known scale: under 0.1 no shift, 0.1 to 0.25 a moderate one, over 0.25 (the default
threshold) a significant one. On inputs drawn from the reference's own distribution its
expected value is about ``(bins - 1) * (1 / window + 1 / reference)`` (:func:`noise_floor`), so
the number of bins is chosen from the reference's size to keep that well under the threshold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SCORES = ("input_rms", "confidence")
MAX_BINS = 10
#: Inputs of the reference per bin, at least (fewer bins for a small test part).
PER_BIN = 20
#: Smallest share of a bin, so that an empty bin gives a large but finite PSI.
EPSILON = 1e-4
#: The PSI above which inputs are said to have drifted (the usual rule of thumb).
DEFAULT_THRESHOLD = 0.25
#: Most inputs the reference is computed on (evenly spaced over the test part).
MAX_REFERENCE_INPUTS = 1000


def input_rms(batch: np.ndarray) -> np.ndarray:
    """The root mean square of each preprocessed input of ``batch`` (``(n, ...)``)."""
    flat = np.asarray(batch, dtype=np.float32).reshape(len(batch), -1)
    # one BLAS dot product per row: 8x faster than a float64 sum (0.13 ms for a 224 px image,
    # on every request of the service), and its float32 rounding is far below the drift bins
    squares = np.array([np.dot(row, row) for row in flat], dtype=np.float64)
    return np.sqrt(squares / max(flat.shape[1], 1))


def confidence(proba: np.ndarray) -> np.ndarray:
    """The largest probability of each row, rounded to 3 decimals."""
    return np.round(np.max(np.asarray(proba, dtype=np.float64), axis=1), 3)


def fit_bins(values: np.ndarray) -> dict[str, Any]:
    """The quantile bins of ``values`` and the share of them in each bin."""
    values = np.asarray(values, dtype=np.float64)
    bins = int(np.clip(len(values) // PER_BIN, 2, MAX_BINS))
    inner = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    edges = np.unique(np.round(inner, 6))
    shares = np.bincount(bin_of(edges, values), minlength=len(edges) + 1) / len(values)
    return {"edges": [float(e) for e in edges], "proportions": [round(float(s), 6) for s in shares]}


def bin_of(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The bin of each value (0 to ``len(edges)``), ties going to the upper bin."""
    return np.searchsorted(edges, np.round(np.asarray(values, dtype=np.float64), 6), side="right")


def psi(expected: np.ndarray, counts: np.ndarray) -> float:
    """The population stability index of bin ``counts`` against the shares ``expected``."""
    total = counts.sum()
    if not total:
        return math.nan
    actual = np.maximum(counts / total, EPSILON)
    expected = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def noise_floor(n_bins: int, window: int, reference: int) -> float:
    """The PSI expected between two samples of one distribution: ``(bins - 1)(1/n + 1/m)``."""
    return (n_bins - 1) * (1.0 / window + 1.0 / reference)


def reference_scores(predictor, inputs, proba: np.ndarray, batch_size: int = 64) -> dict[str, Any]:
    """The drift reference of ``predictor`` on ``inputs`` (the test part) and their
    probabilities ``proba``: the quantile bins of each score (at most
    :data:`MAX_REFERENCE_INPUTS` inputs, evenly spaced, are preprocessed again)."""
    items = predictor.preprocessor.as_list(inputs)
    keep = np.unique(np.linspace(0, len(items) - 1, min(len(items), MAX_REFERENCE_INPUTS)).astype(int))
    rms = [input_rms(predictor.preprocessor([items[i] for i in keep[start:start + batch_size]]).numpy())
           for start in range(0, len(keep), batch_size)]
    return {
        "statistic": "psi",
        "part": "test",
        "n_inputs": int(len(keep)),
        "scores": {"input_rms": fit_bins(np.concatenate(rms)),
                   "confidence": fit_bins(confidence(np.asarray(proba)[keep]))},
    }
