"""What the service has done, for Prometheus: ``GET /metrics`` in its text exposition format.

Series: requests, errors and latency by endpoint; micro-batch sizes; predictions by class; the
mean confidence and the share of unknown (out-of-distribution) inputs over a window of recent
inputs; the drift statistic.

Every app has its own :class:`~prometheus_client.CollectorRegistry` (several apps in one process
never share a series). The label values are bounded: ``endpoint`` is one of :data:`ENDPOINTS`
(anything else is ``other``), ``status`` an HTTP status code, ``class`` one of the model's
classes, ``score`` one of :data:`~sigclass.evaluation.drift.SCORES`. Per request the cost is a
few counter increments and, per scored input, one binary search per drift score.

Drift (:mod:`sigclass.evaluation.drift`): the last ``drift_window`` scored inputs are binned
like the reference saved with the model at training time, and ``sigclass_drift_psi`` is their
population stability index against it, NaN until the window is full. A model saved before the
reference was recorded has none: the drift series are then absent and ``/metadata`` says why.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ..evaluation.drift import SCORES, bin_of, confidence, input_rms, noise_floor, psi

__all__ = ["CONTENT_TYPE_LATEST", "ENDPOINTS", "DriftWindow", "Monitor", "MetricsMiddleware"]

#: The paths counted under their own name; every other path is counted as ``other``.
ENDPOINTS = ("/predict", "/predict/batch", "/metadata", "/metrics", "/ready", "/health", "/")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class DriftWindow:
    """The bins of the last ``size`` inputs for one score, kept as counts (O(1) per input).

    Args:
        edges: The reference's inner bin edges.
        expected: The reference's share in each bin.
        size: How many recent inputs the window holds.
    """

    def __init__(self, edges: list[float], expected: list[float], size: int):
        self.edges = np.asarray(edges, dtype=np.float64)
        self.expected = np.asarray(expected, dtype=np.float64)
        self.size = size
        self.bins: deque[int] = deque()
        self.counts = np.zeros(len(self.expected), dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        for index in bin_of(self.edges, values)[-self.size:]:
            if len(self.bins) == self.size:
                self.counts[self.bins.popleft()] -= 1
            self.bins.append(int(index))
            self.counts[index] += 1

    @property
    def full(self) -> bool:
        return len(self.bins) >= self.size

    def statistic(self) -> float:
        """The PSI of the window against the reference; NaN until the window is full."""
        return psi(self.expected, self.counts) if self.full else math.nan


class Monitor:
    """The service's metrics: requests, latency, batches, predictions and drift.

    Args:
        window: Inputs in the drift and mean-confidence window.
        threshold: The PSI above which the inputs are said to have drifted.
    """

    def __init__(self, window: int, threshold: float):
        self.window, self.threshold = window, threshold
        self.registry = CollectorRegistry(auto_describe=True)
        self.lock = threading.Lock()
        self.requests = Counter("sigclass_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.errors = Counter("sigclass_request_errors", "HTTP requests answered with a status of "
                              "400 or more, by endpoint and status", ["endpoint", "status"],
                              registry=self.registry)
        self.latency = Histogram("sigclass_request_duration_seconds", "Time from a request's "
                                 "arrival to its answer", ["endpoint"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch_sizes: Histogram | None = None
        self.predictions: Counter | None = None
        self.classes: list[str] = []
        self.confidences: deque[float] = deque(maxlen=window)
        self.unknowns: deque[bool] = deque(maxlen=window)
        self.unknown_inputs: Counter | None = None
        self.drift: dict[str, DriftWindow] = {}
        self.reference: dict[str, Any] | None = None

    def attach(self, classes: list[str], reference: dict[str, Any] | None,
               max_rows: int) -> None:
        """The series of the loaded model: its classes, its drift reference, and its batch
        sizes up to ``max_rows`` (once: an app serves one model)."""
        if self.predictions is not None:
            return
        self.classes, self.reference = list(classes), reference
        # powers of two up to the largest batch: a batch request passes through in one piece
        buckets = sorted({2 ** i for i in range(max_rows.bit_length())} | {max_rows})
        self.batch_sizes = Histogram("sigclass_batch_size", "Inputs per pass through the model "
                                     "(micro-batching)", buckets=buckets, registry=self.registry)
        self.predictions = Counter("sigclass_predictions", "Inputs scored, by predicted class",
                                   ["class"], registry=self.registry)
        for name in self.classes:  # every class is a series from the start, at 0
            self.predictions.labels(name)
        mean = Gauge("sigclass_confidence_mean", f"Mean probability of the predicted class over "
                     f"the last {self.window} inputs (NaN before the first)", registry=self.registry)
        mean.set_function(self._mean_confidence)
        self.unknown_inputs = Counter("sigclass_unknown_inputs", "Inputs scored as unknown (out "
                                      "of distribution: the model's OOD score above its threshold)",
                                      registry=self.registry)
        rate = Gauge("sigclass_unknown_rate", f"Share of unknown inputs among the last {self.window} "
                     "scored (NaN before the first, and for a model saved without an OOD score)",
                     registry=self.registry)
        rate.set_function(self._unknown_rate)
        if reference is None:
            return
        self.drift = {score: DriftWindow(bins["edges"], bins["proportions"], self.window)
                      for score, bins in reference["scores"].items() if score in SCORES}
        gauge = Gauge("sigclass_drift_psi", f"Population stability index of the last {self.window} "
                      "inputs' score against the model's test part (NaN until the window is full)",
                      ["score"], registry=self.registry)
        for score, window in self.drift.items():
            gauge.labels(score).set_function(self._locked(window.statistic))
        Gauge("sigclass_drift_threshold", "The PSI above which the inputs are said to have "
              "drifted", registry=self.registry).set(self.threshold)
        Gauge("sigclass_drift_window_inputs", "Inputs in the drift window",
              registry=self.registry).set_function(lambda: len(next(iter(self.drift.values())).bins))

    def _locked(self, function):
        def call():
            with self.lock:
                return function()
        return call

    def _unknown_rate(self) -> float:
        with self.lock:
            return float(np.mean(self.unknowns)) if self.unknowns else math.nan

    def _mean_confidence(self) -> float:
        with self.lock:
            return float(np.mean(self.confidences)) if self.confidences else math.nan

    # -- observations -------------------------------------------------------------------------

    def observe_request(self, path: str, method: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"
        self.requests.labels(endpoint, method if method in HTTP_METHODS else "other", str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, rows: int) -> None:
        if self.batch_sizes is not None:
            self.batch_sizes.observe(rows)

    def observe_predictions(self, batch: np.ndarray, proba: np.ndarray) -> None:
        """Count the predicted classes of ``proba`` and add ``batch`` (the preprocessed inputs)
        and ``proba`` to the drift window."""
        counts = np.bincount(np.argmax(proba, axis=1), minlength=len(self.classes))
        for index in np.flatnonzero(counts):
            self.predictions.labels(self.classes[index]).inc(int(counts[index]))
        scores = {"confidence": confidence(proba)}
        if "input_rms" in self.drift:
            scores["input_rms"] = input_rms(batch)
        with self.lock:
            self.confidences.extend(np.max(proba, axis=1).tolist())
            for score, window in self.drift.items():
                window.add(scores[score])

    def observe_unknown(self, flags: list[bool | None]) -> None:
        """Count the inputs found unknown (``None``: a model without an OOD score)."""
        known = [bool(f) for f in flags if f is not None]
        if not known or self.unknown_inputs is None:
            return
        self.unknown_inputs.inc(sum(known))
        with self.lock:
            self.unknowns.extend(known)

    # -- reading ------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def drift_summary(self) -> dict[str, Any]:
        """The drift reference, the window and the current statistic, for ``/metadata``."""
        summary: dict[str, Any] = {"statistic": "psi", "threshold": self.threshold,
                                   "window": {"size": self.window}}
        if self.reference is None:
            return {**summary, "reference": None, "current": None, "drifting": None,
                    "status": "no reference: the model was saved before sigclass recorded the "
                    "test part's drift scores; retrain it to monitor drift"}
        with self.lock:
            current = {s: w.statistic() for s, w in self.drift.items()}
            inputs = len(next(iter(self.drift.values())).bins)
        reference_n = self.reference["n_inputs"]
        values = [v for v in current.values() if not math.isnan(v)]
        return {
            **summary,
            "window": {"size": self.window, "inputs": inputs, "full": inputs >= self.window},
            "reference": {"part": self.reference["part"], "n_inputs": reference_n,
                          "scores": self.reference["scores"]},
            "current": {s: (None if math.isnan(v) else round(v, 6)) for s, v in current.items()},
            "noise_floor": {s: round(noise_floor(len(w.expected), self.window, reference_n), 6)
                            for s, w in self.drift.items()},
            "drifting": None if not values else max(values) > self.threshold,
            "status": "ok" if values else f"collecting: {inputs} of {self.window} inputs",
        }


HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})


class MetricsMiddleware:
    """Counts every HTTP request by endpoint, method and status, and times it (ASGI)."""

    def __init__(self, app, monitor: Monitor):
        self.app = app
        self.monitor = monitor

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # what the server answers when the app raises before it responds

        async def recording(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            self.monitor.observe_request(scope.get("path", ""), scope.get("method", ""), status,
                                         time.perf_counter() - start)
