"""The localization benchmark's scores on hand-made maps and boxes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_cam_localization.py"
_spec = importlib.util.spec_from_file_location("bench_cam_localization", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

BOX = (20, 10, 60, 50)  # x0, y0, x1, y1 in a 100 x 200 (H x W) map


def _map_with_peak(y: int, x: int) -> np.ndarray:
    cam = np.zeros((100, 200), dtype=np.float32)
    cam[BOX[1]:BOX[3], BOX[0]:BOX[2]] = 0.5  # half the map's mass in the box ...
    cam[0:40, 100:140] += 0.5  # ... half outside
    cam[y, x] = 1.0
    return cam


def test_pointing_inside_in_the_dilation_and_outside():
    assert bench.score_map(_map_with_peak(30, 40), [BOX])["pointing"] is True
    # 2 % of the width is 4 px, of the height 2 px: x = 62 and y = 51 are still hits.
    assert bench.score_map(_map_with_peak(30, 62), [BOX])["pointing"] is True
    assert bench.score_map(_map_with_peak(51, 40), [BOX])["pointing"] is True
    assert bench.score_map(_map_with_peak(30, 65), [BOX])["pointing"] is False
    assert bench.score_map(_map_with_peak(53, 40), [BOX])["pointing"] is False
    assert bench.score_map(np.zeros((100, 200), np.float32), [BOX])["pointing"] is False


def test_energy_share_and_baselines():
    cam = np.zeros((100, 200), dtype=np.float32)
    cam[BOX[1]:BOX[3], BOX[0]:BOX[2]] = 1.0
    cam[0:40, 100:140] = 1.0
    scores = bench.score_map(cam, [BOX])
    assert scores["energy"] == pytest.approx(0.5)
    # The dilated box: x 16..64 (48 px), y 8..52 (44 px) of 100 x 200.
    assert scores["random_point"] == pytest.approx(48 * 44 / 20000)
    assert scores["uniform_energy"] == pytest.approx(40 * 40 / 20000)
    assert scores["centre_point"] is False  # the centre (50, 100) is outside
    centred = bench.score_map(cam, [(80, 30, 120, 70)])
    assert centred["centre_point"] is True
    summary = bench.summarize([scores, centred])
    assert summary["n"] == 2 and summary["pointing_vs_random"] == pytest.approx(
        summary["pointing"] / summary["random_point"])


def test_windows_hold_the_box_or_avoid_it():
    rng = np.random.default_rng(0)
    box = (200, 150, 400, 330)
    for _ in range(20):
        x0, y0, x1, y1 = bench.window_around(box, 320, 320, 640, 480, rng)
        assert x0 <= 200 and x1 >= 400 and y0 <= 150 and y1 >= 330 and x1 - x0 == 320
        assert x0 >= 0 and x1 <= 640 and y0 >= 0 and y1 <= 480
    assert bench.window_around((0, 0, 400, 100), 320, 320, 640, 480, rng) is None
    left = bench.free_window([(300, 0, 500, 200)], 200, 200, 640, 480, rng)
    assert left is not None
    x0, y0, x1, y1 = left
    assert x1 <= 300 or x0 >= 500 or y0 >= 200
