"""The service's micro-batcher: batches form from requests on their way, and a lone request never
waits for company that is not coming."""

import asyncio
import time

import numpy as np

from sigclass.serve.batching import MicroBatcher


def _doubled(batch: np.ndarray) -> np.ndarray:
    return batch * 2


async def _started(max_wait_ms: float) -> MicroBatcher:
    batcher = MicroBatcher(_doubled, max_batch_size=8, max_wait_ms=max_wait_ms)
    await batcher.start()
    return batcher


def test_a_lone_request_runs_without_waiting():
    async def scenario():
        batcher = await _started(max_wait_ms=2000)
        try:
            started = time.perf_counter()
            out = await batcher.submit(np.ones((1, 3), np.float32))
            return out, time.perf_counter() - started, batcher.stats
        finally:
            await batcher.stop()

    out, seconds, stats = asyncio.run(scenario())
    np.testing.assert_array_equal(out, 2 * np.ones((1, 3)))
    assert seconds < 1.0, f"a lone request waited {seconds:.2f} s for a batch (max_wait_ms=2000)"
    assert (stats.batches, stats.rows) == (1, 1)


def test_a_batch_waits_for_a_request_being_preprocessed():
    async def late_request(batcher: MicroBatcher) -> np.ndarray:
        with batcher.expecting():
            await asyncio.sleep(0.05)  # reading and preprocessing its input
        return await batcher.submit(np.full((2, 3), 5, np.float32))

    async def scenario():
        batcher = await _started(max_wait_ms=2000)
        try:
            with batcher.expecting():  # the second request announces itself before the first submits
                late = asyncio.create_task(late_request(batcher))
                await asyncio.sleep(0)
            first = await batcher.submit(np.ones((1, 3), np.float32))
            return first, await late, batcher.stats
        finally:
            await batcher.stop()

    first, late, stats = asyncio.run(scenario())
    np.testing.assert_array_equal(first, 2 * np.ones((1, 3)))
    np.testing.assert_array_equal(late, np.full((2, 3), 10))
    assert (stats.batches, stats.largest) == (1, 3), "the announced request did not join the batch"


def test_a_request_runs_alone_only_when_nothing_else_is_running_queued_or_coming():
    """``alone`` hands a lone request's whole work to the model thread in one call: allowed
    only while the batcher is idle, and counted as a batch of one row; a refused input counts
    no batch, and a request on its way or a running batch makes the batcher busy."""
    import threading

    async def scenario():
        batcher = await _started(max_wait_ms=1)
        try:
            seen = {"idle_at_start": batcher.idle}
            thread = await batcher.alone(lambda: threading.current_thread().name)
            seen["thread"] = thread
            with batcher.expecting():
                seen["idle_while_coming"] = batcher.idle
            release = threading.Event()
            running = asyncio.ensure_future(batcher.alone(release.wait, 5))
            await asyncio.sleep(0.05)
            seen["idle_while_running"] = batcher.idle
            release.set()
            await running
            seen["idle_after"] = batcher.idle

            def refused():
                raise ValueError("a bad input")

            try:
                await batcher.alone(refused)
            except ValueError as exc:
                seen["error"] = str(exc)
            return seen, batcher.stats
        finally:
            await batcher.stop()

    seen, stats = asyncio.run(scenario())
    assert seen["idle_at_start"] and seen["idle_after"]
    assert not seen["idle_while_coming"] and not seen["idle_while_running"]
    assert seen["thread"].startswith("sigclass-model")
    assert seen["error"] == "a bad input"
    assert (stats.batches, stats.rows) == (2, 2)
