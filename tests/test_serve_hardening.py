"""The scoring service under hostile use (issue 14), against real uvicorn processes on 127.0.0.1.

Every attack is generated here, small: tiny files that decode to gigabytes, formats outside
the allow-list, files whose header lies about their size, numbers too long or too large, slow
and aborted clients, slow explanations ahead of plain predictions. Each test checks the answer
(status and a message naming the input), that the server stays up, and the memory it holds.
The servers run the default backend (``auto``, images) and ``onnx`` (signals), checked against
the in-process PyTorch predictor.
"""

from __future__ import annotations

import concurrent.futures
import io
import socket
import struct
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

import sigclass as sc
from model_folders import own_cache
from servers import running_server, train_image_model, train_signal_model

pytestmark = pytest.mark.slow

IMAGE_FLAGS = ("--max-wait-ms", "5", "--max-request-bytes", "3000000", "--header-timeout", "1",
               "--body-timeout", "2", "--request-timeout", "10", "--max-image-pixels", "30000000",
               "--max-batch-pixels", "60000000", "--max-pending-explanations", "4",
               "--log-level", "info")


@pytest.fixture(scope="module", autouse=True)
def _module_env(tmp_path_factory):
    with own_cache(tmp_path_factory.mktemp("hardening-env")):
        yield


@pytest.fixture(scope="module")
def models(fridge, tmp_path_factory):
    out = tmp_path_factory.mktemp("hardening-models")
    return train_image_model(fridge, out), train_signal_model(out)


@pytest.fixture(scope="module")
def image_server(models):
    """The image model with the default backend (auto) and tight limits."""
    with running_server(models[0], *IMAGE_FLAGS) as (base, process):
        yield base, process


@pytest.fixture(scope="module")
def signal_server(models):
    with running_server(models[1], "--backend", "onnx", "--limit-concurrency", "8",
                        "--header-timeout", "1") as (base, process):
        yield base, process


def _rss(process) -> int:
    return psutil.Process(process.pid).memory_info().rss


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _photo(size=(48, 40), fmt="JPEG", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return _encode(Image.fromarray(array), fmt)


def _smooth(size, seed=0) -> bytes:
    """A JPEG photo-like image (gradients and mild noise): small to send, costly to explain."""
    width, height = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    array = np.stack([xs * 255 // width, ys * 255 // height, (xs + ys) * 127 // (width + height)], -1)
    array = np.clip(array + rng.integers(-8, 8, array.shape), 0, 255).astype(np.uint8)
    return _encode(Image.fromarray(array), "JPEG", quality=80)


def _post(base, data: bytes, name="x.png", path="/predict", timeout=60, **kwargs):
    return httpx.post(base + path, files={"file": (name, data, "image/png")}, timeout=timeout,
                      **kwargs)


def _healthy(base, process) -> None:
    assert process.poll() is None
    started = time.perf_counter()
    assert httpx.get(base + "/health", timeout=5).status_code == 200
    assert time.perf_counter() - started < 2.0


def test_default_backend_and_onnx_agree_with_torch(models, image_server, signal_server, fridge):
    from aeon.datasets import load_classification

    base, _ = image_server
    meta = httpx.get(base + "/metadata").json()
    assert meta["serving"]["backend"] in ("torch", "onnx") and meta["serving"]["chosen_by"] == "timing"
    photos = [sorted((fridge / c).iterdir())[0] for c in ("can", "carton", "milk_bottle")]
    expected = sc.load(models[0]).predict_proba(photos)
    got = [list(_post(base, p.read_bytes(), p.name).json()["probabilities"].values()) for p in photos]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    X, _ = load_classification("BasicMotions", split="test")
    X = X[:3].astype(np.float64)
    expected = sc.load(models[1]).predict_proba(X)
    signal_base, _ = signal_server
    assert httpx.get(signal_base + "/metadata").json()["serving"]["backend"] == "onnx"
    batch = httpx.post(signal_base + "/predict/batch", json=X.tolist(), timeout=60).json()
    np.testing.assert_allclose([list(p["probabilities"].values()) for p in batch["predictions"]],
                               expected, atol=1e-4)


def test_tiny_wide_images_are_refused_without_memory(image_server):
    base, process = image_server
    wide = _encode(Image.new("1", (4000, 1)), "PNG")
    tall = _encode(Image.new("1", (1, 30_000)), "PNG")
    assert len(wide) < 200
    before = _rss(process)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: _post(base, wide if i % 2 else tall, f"w{i}.png"), range(8)))
    for response in responses:
        assert response.status_code == 422, response.text
        assert "an aspect ratio of" in response.json()["message"]
        assert "--max-aspect-ratio" in response.json()["message"]
    assert _rss(process) - before < 50e6
    _healthy(base, process)


def _patched_jpeg() -> bytes:
    """A 48x40 JPEG whose frame header declares 4800x4000 pixels."""
    data = bytearray(_photo())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 4000, 4800)
    return bytes(data)


def _tiff_past_end() -> bytes:
    """An uncompressed 64x64 grey TIFF whose one strip points past the end of the file."""
    entries = [(256, 64), (257, 64), (258, 8), (259, 1), (262, 1), (273, 10_000), (277, 1),
               (278, 64), (279, 4096)]
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, value in entries:
        kind = 4 if tag in (273, 279) else 3
        out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<I", value) if kind == 4 else
                                                     struct.pack("<HH", value, 0))
    return out + struct.pack("<I", 0) + bytes(200)


def _fake(magic: bytes) -> bytes:
    return magic + bytes(64)


HOSTILE_IMAGES = {
    "GIF": (lambda: _encode(Image.new("P", (32, 32)), "GIF"), "is a GIF image"),
    "ICO": (lambda: _encode(Image.new("RGB", (32, 32)), "ICO"), "is an ICO icon"),
    "PPM": (lambda: _encode(Image.new("RGB", (32, 32)), "PPM"), "is a PPM image"),
    "PCX": (lambda: _encode(Image.new("RGB", (32, 32)), "PCX"), "is a PCX image"),
    "IM": (lambda: _encode(Image.new("RGB", (32, 32)), "IM"), "is an IM image"),
    "TGA": (lambda: _encode(Image.new("RGB", (32, 32)), "TGA"), "is not an image"),
    "DDS": (lambda: _fake(b"DDS |\x00\x00\x00"), "is a DDS texture"),
    "EPS": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
            "is PostScript (EPS)"),
    "JPEG declaring 4800x4000": (_patched_jpeg, "cannot hold the 4800x4000 pixels"),
    "JPEG without its end": (lambda: _photo((200, 160))[:-400], "is truncated or corrupted"),
    "TIFF strip past the end": (_tiff_past_end, "lies past the end of the file"),
}


@pytest.mark.parametrize("case", list(HOSTILE_IMAGES))
def test_formats_outside_the_allow_list_and_lying_headers_get_422(image_server, case):
    base, process = image_server
    make, message = HOSTILE_IMAGES[case]
    response = _post(base, make(), "upload.bin")
    assert response.status_code == 422, response.text
    assert message in response.json()["message"]
    assert response.json()["problems"][0]["path"] == "upload.bin"
    _healthy(base, process)


def test_allowed_formats_are_scored(image_server):
    base, _ = image_server
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    for fmt in ("JPEG", "PNG", "BMP", "TIFF", "WEBP"):
        response = _post(base, _encode(image, fmt), f"ok.{fmt.lower()}")
        assert response.status_code == 200, (fmt, response.text)


def _sample_peak(process, stop: threading.Event, peak: list) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], _rss(process))
        time.sleep(0.02)


def test_memory_is_bounded_during_a_burst_and_returns_after(image_server):
    base, process = image_server
    big = _encode(Image.new("RGB", (4000, 4000), (90, 140, 30)), "PNG")  # 48 MB decoded
    assert _post(base, big, "warm.png").status_code == 200  # first large input: arenas, caches
    time.sleep(0.5)
    before = _rss(process)
    stop, peak = threading.Event(), [before]
    sampler = threading.Thread(target=_sample_peak, args=(process, stop, peak))
    sampler.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            singles = list(pool.map(lambda i: _post(base, big, f"big{i}.png"), range(8)))
        files = [("files", (f"b{i}.png", big, "image/png")) for i in range(2)]
        batch = httpx.post(base + "/predict/batch", files=files, timeout=60)
        over = [("files", (f"o{i}.png", big, "image/png")) for i in range(4)]  # 64 Mpx together
        too_many = httpx.post(base + "/predict/batch", files=over, timeout=60)
    finally:
        stop.set()
        sampler.join()
    assert all(r.status_code == 200 for r in singles), [r.text for r in singles]
    assert batch.status_code == 200, batch.text
    assert too_many.status_code == 413
    assert "more than 60,000,000 pixels together" in too_many.json()["message"]
    # two decodes at once: a few decoded images' worth, never eight
    assert peak[0] - before < 600e6, f"peak {peak[0] / 1e6:.0f} MB over {before / 1e6:.0f} MB"
    time.sleep(0.5)
    after = _rss(process)
    print(f"RSS before {before / 1e6:.0f} MB, peak {peak[0] / 1e6:.0f} MB, after {after / 1e6:.0f} MB")
    assert after < 1.10 * before, f"RSS {before / 1e6:.0f} MB before, {after / 1e6:.0f} MB after"
    _healthy(base, process)


def test_a_slow_explanation_does_not_delay_a_plain_prediction(image_server):
    base, process = image_server
    wide = _smooth((1400, 1000), seed=3)  # explained at 605x432: each takes a while
    small = _photo(seed=4)
    explained = {}

    def explain(i):
        response = _post(base, wide, f"e{i}.jpg", params={"explain": "true"}, timeout=30)
        explained[i] = (response.status_code, time.perf_counter(), response.json())

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(explain, i) for i in range(6)]
        time.sleep(0.4)  # the explanations are decoded and queued
        started = time.perf_counter()
        plain = _post(base, small, "plain.jpg")
        plain_done = time.perf_counter()
        for future in futures:
            future.result()
    assert plain.status_code == 200, plain.text
    statuses = [status for status, _, _ in explained.values()]
    assert set(statuses) <= {200, 503, 504}, explained
    assert 200 in statuses
    for status, _, body in explained.values():
        if status == 503:
            assert body["error"] == "busy"
        if status == 504:
            assert body["error"] == "timeout" and "--request-timeout" in body["message"]
    last = max(t for _, t, _ in explained.values())
    print(f"plain prediction {plain_done - started:.2f} s behind explanations {statuses}, the "
          f"last done {last - started:.2f} s after it started")
    assert plain_done - started < 1.5, f"plain prediction took {plain_done - started:.2f} s"
    assert plain_done < last, "the plain prediction waited for every explanation"
    _healthy(base, process)


def _connect(base: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
    sock.settimeout(10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_clients_are_cut_off(image_server):
    base, process = image_server
    slow_head = _connect(base)
    slow_head.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    silent = _connect(base)  # connects and sends nothing
    slow_body = _connect(base)
    slow_body.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                      b"Content-Length: 1000\r\n\r\n\x89PNG")
    started = time.perf_counter()
    answers = [_read_all(s) for s in (slow_head, silent, slow_body)]  # until the server closes
    elapsed = time.perf_counter() - started
    for sock in (slow_head, silent, slow_body):
        sock.close()
    assert answers[0].startswith(b"HTTP/1.1 408") and b"header_timeout" in answers[0]
    assert answers[1].startswith(b"HTTP/1.1 408")
    assert answers[2].startswith(b"HTTP/1.1 408") and b"body_timeout" in answers[2]
    assert elapsed < 5.0, f"slow clients held their connections {elapsed:.1f} s"
    _healthy(base, process)


def test_an_endless_request_head_is_refused(image_server):
    base, process = image_server
    sock = _connect(base)
    filler = b"".join(f"X-Filler-{i}: ".encode() + b"a" * 1000 + b"\r\n" for i in range(70))
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n" + filler)  # 71 kB, the head unfinished
    answer = _read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    _healthy(base, process)


def test_many_half_sent_requests_are_released(image_server):
    base, process = image_server
    sockets = []
    for _ in range(200):
        sock = _connect(base)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le")
        sockets.append(sock)
    _healthy(base, process)  # the event loop still answers beside them
    time.sleep(2.0)
    connections = psutil.Process(process.pid).net_connections(kind="tcp")
    for sock in sockets:
        sock.close()
    held = [c for c in connections if c.status == psutil.CONN_ESTABLISHED]
    assert len(held) < 20, f"{len(held)} half-sent requests still held after 2 s"


def test_connections_over_the_limit_get_503_until_idle_ones_are_cut(signal_server):
    base, process = signal_server
    idle = [_connect(base) for _ in range(8)]  # the limit: connections that send nothing
    time.sleep(0.2)
    try:
        answer = httpx.get(base + "/health", timeout=5)
        assert answer.status_code == 503
        assert answer.json()["error"] == "busy" and "--limit-concurrency" in answer.json()["message"]
        assert answer.headers["retry-after"] == "1"
    finally:
        time.sleep(1.5)  # the header timeout closes the idle ones
        for sock in idle:
            sock.close()
    _healthy(base, process)


def test_an_aborted_upload_is_logged_in_one_line_not_a_500(image_server):
    base, process = image_server
    for _ in range(3):
        sock = _connect(base)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 100000\r\n\r\n" + bytes(5000))
        time.sleep(0.2)
        sock.close()
    time.sleep(0.5)
    with open(process.log_path) as file:
        log = file.read()
    assert "the client disconnected before sending its whole request" in log
    assert "Traceback" not in log and "ClientDisconnect" not in log
    assert " 500 " not in log
    _healthy(base, process)


def _csv_with_cell(cell: str) -> str:
    rows = [",".join(["0.5"] * 6)] * 100
    rows[7] = ",".join(["0.5", cell, "0.5", "0.5", "0.5", "0.5"])
    return "\n".join(rows)


HOSTILE_SIGNALS = {
    "400-digit integers": (lambda X: {"content": _json_with(X, "9" * 400)},
                           "body[1][3]: holds a number of 400 characters"),
    "5000-digit integers": (lambda X: {"content": _json_with(X, "9" * 5000)},
                            "body[1][3]: holds a number of 5,000 characters"),
    "1e308": (lambda X: {"content": _json_with(X, "1e308")},
              "body[1][3]: holds 1e+308, beyond what float32 holds"),
    "Infinity": (lambda X: {"content": _json_with(X, "Infinity")},
                 "body[1][3]: holds Infinity, which is not a JSON number"),
    "200,000-char CSV cell": (lambda X: {"files": {"file": ("s.csv", _csv_with_cell("1" * 200_000),
                                                            "text/csv")}},
                              "s.csv: has a cell of more than 256 characters at row 8, column 2"),
    "CSV value 1e300": (lambda X: {"files": {"file": ("s.csv", _csv_with_cell("1e300"), "text/csv")}},
                        "s.csv: holds 1e+300 at channel 1, time 7, beyond what float32 holds"),
}


def _json_with(X, token: str) -> bytes:
    """The JSON text of case ``X[0]`` with the value at channel 1, time 3 spelled ``token``."""
    rows = [[repr(float(v)) for v in row] for row in X[0]]
    rows[1][3] = token
    return ("[" + ",".join("[" + ",".join(row) + "]" for row in rows) + "]").encode()


@pytest.fixture(scope="module")
def motions():
    from aeon.datasets import load_classification

    X, _ = load_classification("BasicMotions", split="test")
    return X[:5].astype(np.float64)


@pytest.mark.parametrize("case", list(HOSTILE_SIGNALS))
def test_hostile_numbers_get_422_naming_the_field(signal_server, motions, case):
    base, process = signal_server
    make, message = HOSTILE_SIGNALS[case]
    kwargs = make(motions)
    if "content" in kwargs:
        kwargs["headers"] = {"content-type": "application/json"}
    response = httpx.post(base + "/predict", timeout=60, **kwargs)
    assert response.status_code == 422, response.text
    assert message in response.json()["message"], response.json()
    _healthy(base, process)


def test_large_finite_values_never_answer_null(signal_server, motions):
    base, _ = signal_server
    case = motions[0] * 1e37  # fits float32, overflows inside the network
    response = httpx.post(base + "/predict", json=case.tolist(), timeout=60)
    if response.status_code == 200:
        body = response.json()
        assert np.isfinite(body["confidence"]) and all(np.isfinite(list(body["probabilities"].values())))
    else:
        assert response.status_code == 422
        assert "body: gives the model non-finite outputs" in response.json()["message"]


def test_a_batch_names_every_bad_signal(signal_server, motions):
    base, _ = signal_server
    import json

    cases = [case.tolist() for case in motions]
    cases[1][0][0] = "x"
    cases[2] = cases[2][:4]
    cases[4][0][0] = "TOO_LONG"
    body = json.dumps(cases).replace('"TOO_LONG"', "9" * 300)
    response = httpx.post(base + "/predict/batch", content=body.encode(), timeout=60,
                          headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    paths = [p["path"] for p in response.json()["problems"]]
    assert paths == ["inputs[1]", "inputs[2]", "inputs[4][0][0]"]


def test_metadata_shows_no_absolute_paths(models, image_server, signal_server):
    for base, _ in (image_server, signal_server):
        meta = httpx.get(base + "/metadata").json()
        text = str(meta)
        assert str(models[0].parent) not in text and str(models[1].parent) not in text

        def strings(value):
            if isinstance(value, dict):
                return [s for v in value.values() for s in strings(v)]
            if isinstance(value, list):
                return [s for v in value for s in strings(v)]
            return [value] if isinstance(value, str) else []

        assert not [s for s in strings(meta) if s.startswith("/") or s.startswith("file:")]


def test_requests_in_flight_over_the_limit_get_a_json_503():
    """Requests whose clients hung up keep running; the app-level limit counts them, not sockets."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from sigclass.serve.guards import ConcurrencyGuard

    release = asyncio.Event()

    async def slow(request):
        await release.wait()
        return PlainTextResponse("done")

    app = ConcurrencyGuard(Starlette(routes=[Route("/", slow)]), limit=2)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sigclass") as client:
            held = [asyncio.create_task(client.get("/")) for _ in range(2)]
            while app.in_flight < 2:
                await asyncio.sleep(0.01)
            refused = await client.get("/")
            release.set()
            answers = await asyncio.gather(*held)
            after = await client.get("/")
        return refused, answers, after

    refused, answers, after = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.json()["error"] == "busy"
    assert refused.headers["retry-after"] == "1"
    assert [a.status_code for a in answers] == [200, 200]
    assert after.status_code == 200 and app.in_flight == 0
