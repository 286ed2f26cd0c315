"""ONNX Runtime sessions on the CPU, made one way for the toolkit and the lean serving runtime.

:func:`cpu_session` is every session sigclass opens: ``threads`` intra-op threads that sleep
rather than spin while they wait (spinning threads stall a shared CPU), one inter-op thread, all
graph optimizations. :class:`ParallelSessions` serves a graph to several threads at once, as the
scoring service's model workers call it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["ParallelSessions", "cpu_session"]


def cpu_session(path: str | Path, threads: int | None = None):
    """An ``onnxruntime.InferenceSession`` of the graph at ``path`` on the CPU, with ``threads``
    intra-op threads (default: one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Threads that spin while waiting stall on a shared CPU (3x slower on 2 busy cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class ParallelSessions:
    """One graph run by several threads at once, as an ``InferenceSession`` is (``run``,
    ``get_inputs``, ``get_outputs``).

    A run that starts while no other is running gets every core (the wide session): a lone
    request is as fast as with one session. A run that starts beside another runs on one thread
    (the narrow session): a convolutional network at batch 1 keeps one core busy but not two, so
    on a 2-core CPU two single-thread runs score about 1.5 times the images of one run on both
    cores, where two runs on both cores each score 1.3 times (``bench/bench_serve.py``).
    ONNX Runtime sessions are safe to run from several threads.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        self.wide = cpu_session(path, threads)
        self.narrow = cpu_session(path, 1)
        self._lock = threading.Lock()
        self.running = 0

    def get_inputs(self):
        return self.wide.get_inputs()

    def get_outputs(self):
        return self.wide.get_outputs()

    def run(self, output_names, feeds: dict[str, Any], *args):
        with self._lock:
            session = self.wide if self.running == 0 else self.narrow
            self.running += 1
        try:
            return session.run(output_names, feeds, *args)
        finally:
            with self._lock:
                self.running -= 1
