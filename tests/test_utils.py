"""Small shared helpers: run records, prefetching."""

from sigclass._utils import environment_info, prefetched


def test_environment_info_names_versions_and_device():
    info = environment_info("cpu")
    assert info["device"] == "cpu"
    assert {"python", "torch", "timm", "scikit-learn"} <= set(info["versions"])


def test_prefetched_keeps_order_and_reads_one_chunk_ahead():
    import threading

    seen = []

    def prepare(chunk):
        seen.append((chunk, threading.current_thread().name))
        return [x * 10 for x in chunk]

    chunks = [[1, 2], [3], [4, 5]]
    pairs = []
    for chunk, ready in prefetched(prepare, chunks):
        pairs.append((chunk, ready))
        # while the caller holds chunk k, chunk k + 1 is being (or has been) read, never k + 2
        assert len(seen) <= chunks.index(chunk) + 2
    assert pairs == [([1, 2], [10, 20]), ([3], [30]), ([4, 5], [40, 50])]
    assert all(name.startswith("sigclass-prefetch") for _, name in seen)


def test_prefetched_raises_a_chunks_error_when_it_is_reached():
    import pytest

    def prepare(chunk):
        if chunk == "bad":
            raise ValueError("unreadable chunk")
        return chunk.upper()

    got = []
    with pytest.raises(ValueError, match="unreadable chunk"):
        for _, ready in prefetched(prepare, ["a", "b", "bad", "c"]):
            got.append(ready)
    assert got == ["A", "B"]
