"""Small shared helpers: ordered prefetching, run records."""

import threading
import time

import pytest

from sigclass._utils import environment_info, prefetch


def test_prefetch_keeps_order_and_bounds_the_work_ahead():
    started = []
    lock = threading.Lock()

    def slow(i):
        with lock:
            started.append(i)
        time.sleep(0.01 * (i % 3))  # finish out of order
        return i * i

    results = []
    for value in prefetch(slow, range(20), workers=3, ahead=4):
        results.append(value)
        with lock:
            assert len(started) <= len(results) + 4  # never more than `ahead` waiting
    assert results == [i * i for i in range(20)]


def test_prefetch_raises_the_workers_error_at_its_place():
    def fail_on_three(i):
        if i == 3:
            raise ValueError("bad item 3")
        return i

    seen = []
    with pytest.raises(ValueError, match="bad item 3"):
        for value in prefetch(fail_on_three, range(6), workers=2):
            seen.append(value)
    assert seen == [0, 1, 2]


def test_environment_info_names_versions_and_device():
    info = environment_info("cpu")
    assert info["device"] == "cpu"
    assert {"python", "torch", "timm", "scikit-learn"} <= set(info["versions"])
