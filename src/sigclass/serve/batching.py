"""Micro-batching: concurrent requests share one pass through the model.

Requests put their preprocessed inputs on a queue. One task takes the first waiting input, waits
at most ``max_wait_ms`` for more (up to ``max_batch_size`` rows), and runs the batch in a single
model thread, off the event loop. While the model runs, new requests queue up and form the next
batch, so under load batches fill without any waiting. The wait is only for requests known to be
coming (being read and preprocessed, see :meth:`MicroBatcher.expecting`): a lone request runs at
once, as with batching off. ``max_batch_size=1`` turns batching off: requests then run one at a
time. A request that finds the batcher idle (nothing running, queued or on its way) may instead
hand its whole work, decoding included, to the model thread in one call (:meth:`MicroBatcher.alone`):
one thread hop fewer, where nothing could have joined its batch anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class BatchStats:
    """Counters of the batches run so far."""

    batches: int = 0
    rows: int = 0
    largest: int = 0
    busy_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        mean = self.rows / self.batches if self.batches else 0.0
        return {"batches": self.batches, "rows": self.rows, "largest_batch": self.largest,
                "mean_batch_size": round(mean, 3), "model_seconds": round(self.busy_seconds, 3)}


class MicroBatcher:
    """Groups concurrent calls of ``run_batch`` (a function of a stacked ``(n, ...)`` array).

    Args:
        run_batch: Maps an ``(n, ...)`` float32 array to ``(n, k)`` outputs; called in the
            model thread only.
        max_batch_size: Most rows per call of ``run_batch``.
        max_wait_ms: Longest the first row of a batch waits for others.
        on_batch: Called with the number of rows of every batch run (the service's metrics).
    """

    def __init__(self, run_batch: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 16,
                 max_wait_ms: float = 2.0, on_batch: Callable[[int], None] | None = None):
        self.run_batch = run_batch
        self.on_batch = on_batch
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.stats = BatchStats()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="sigclass-model")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._carry: tuple | None = None
        self._busy = 0  # batches and lone calls in the model thread or waiting for it
        self.coming = 0  # requests being read and preprocessed, which will submit rows

    @contextlib.contextmanager
    def expecting(self):
        """Marks a request that will :meth:`submit` once the block ends (its inputs are being
        read and preprocessed inside it): batches wait up to ``max_wait_ms`` for such requests,
        and run at once when none is coming."""
        self.coming += 1
        try:
            yield
        finally:
            self.coming -= 1

    @property
    def idle(self) -> bool:
        """Nothing in the model thread, queued or on its way: a request now would run alone."""
        return (self._busy == 0 and self.coming == 0 and self._carry is None
                and (self._queue is None or self._queue.empty()))

    async def alone(self, fn: Callable, *args):
        """``fn(*args)`` in the model thread, counted as a batch of one row: a lone request's
        decoding, preprocessing and pass through the model in one call (see :attr:`idle`)."""
        self._busy += 1
        start = time.perf_counter()
        try:
            result = await self.call(fn, *args)
        finally:
            self._busy -= 1
        self._record(1, time.perf_counter() - start)  # a refused input ran no batch
        return result

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._carry = None
        self._task = asyncio.create_task(self._loop(), name="sigclass-micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=True, cancel_futures=True)

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """Outputs for ``rows`` (``(n, ...)``), computed in a batch with other requests."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, future))
        return await future

    async def call(self, fn: Callable, *args):
        """Run ``fn(*args)`` in the model thread (work that must not run beside a batch)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        queue = self._queue
        first, self._carry = self._carry, None
        if first is None:
            first = await queue.get()
        batch, size = [first], len(first[0])
        deadline = time.perf_counter() + self.max_wait_ms / 1000.0
        while size < self.max_batch_size:
            if not queue.empty():
                item = queue.get_nowait()
            elif self.coming == 0:  # nothing else on its way: waiting would only add latency
                break
            else:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if size + len(item[0]) > self.max_batch_size:
                # too large to join: it leads the next batch instead
                self._carry = item
                break
            batch.append(item)
            size += len(item[0])
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(rows, future) for rows, future in batch if not future.cancelled()]
            if not live:
                continue
            stacked = np.concatenate([rows for rows, _ in live]) if len(live) > 1 else live[0][0]
            start = time.perf_counter()
            self._busy += 1
            try:
                outputs = await loop.run_in_executor(self.executor, self.run_batch, stacked)
            except Exception as exc:  # noqa: BLE001 - the error belongs to the requests
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self._busy -= 1
                self._record(len(stacked), time.perf_counter() - start)
            begin = 0
            for rows, future in live:
                if not future.done():
                    future.set_result(outputs[begin:begin + len(rows)])
                begin += len(rows)

    def _record(self, rows: int, seconds: float) -> None:
        self.stats.batches += 1
        self.stats.rows += rows
        self.stats.largest = max(self.stats.largest, rows)
        self.stats.busy_seconds += seconds
        if self.on_batch is not None:
            self.on_batch(rows)


class Busy(Exception):
    """The worker's queue is full; the caller should answer 503."""


class Worker:
    """One thread for slow work (explanations) beside the model thread, with a bounded queue.

    A slow explanation then delays only the explanations queued behind it, never a plain
    prediction, which goes through the :class:`MicroBatcher`.

    Args:
        max_pending: Most calls queued or running; one more raises :class:`Busy`.
        name: The thread's name prefix.
    """

    def __init__(self, max_pending: int = 4, name: str = "sigclass-explain"):
        self.max_pending = max_pending
        self.pending = 0
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def call(self, fn: Callable, *args):
        """``fn(*args)`` in the worker's thread; :class:`Busy` when ``max_pending`` are waiting."""
        if self.pending >= self.max_pending:
            raise Busy(self.max_pending)
        self.pending += 1
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        # counted until the thread is done, even when the caller stops waiting (a deadline)
        future.add_done_callback(self._done)
        return await asyncio.shield(future)

    def _done(self, _future) -> None:
        self.pending -= 1

    def stop(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
