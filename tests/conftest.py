"""Shared fixtures (the fridgeObjects photos, small generated image folders, an isolated cache)
and the checks that end each session: no process left running, nothing written to the working folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import psutil
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never wait on a model hub
os.environ.setdefault("MPLBACKEND", "Agg")
# Before torch loads: OpenMP threads that spin while waiting stall badly on a CPU shared with
# another job (training ran ~6x slower on 2 cores); passive waiting costs nothing otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
FRIDGE = Path(os.environ.get("SIGCLASS_FRIDGE", REPO.parent / "shared" / "datasets" / "fridgeObjects"))


SLOW_TIMEOUT_S = 1800  # a test marked slow may take this long; the others get pyproject's timeout
# Processes that libraries keep for the whole session and stop themselves at exit: not leftovers.
LIBRARY_HELPERS = ("multiprocessing.resource_tracker", "joblib.externals.loky", "loky.backend")
PROCESS_GRACE_S = 5.0  # a process still stopping when the session ends has this long to go
# Made by tools, not tests: a new entry of the working folder with another name is reported.
TOOL_FOLDERS = frozenset({".pytest_cache", ".ruff_cache", "__pycache__", ".hypothesis"})
_ENTRIES = pytest.StashKey[set]()
_ISOLATION = pytest.StashKey[tuple]()


@pytest.fixture(scope="session")
def fridge() -> Path:
    """The 134 fridgeObjects photos (4 classes); skipped where the shared data is absent, except
    in CI (``CI=true``), where a missing copy fails the tests that need it."""
    if not (FRIDGE / "can").is_dir():
        message = f"fridgeObjects not found at {FRIDGE} (set SIGCLASS_FRIDGE)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"{message}; CI must have it", pytrace=False)
        pytest.skip(f"{message}; CI always has it")
    return FRIDGE


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


def _working_entries() -> set[Path]:
    folders = {REPO, Path.cwd()}
    return {path for folder in folders for path in folder.iterdir() if path.name not in TOOL_FOLDERS}


def isolated_settings(root: Path) -> dict[str, str]:
    """Feature caches and the default MLflow store in a temporary folder, never the working
    folder (nor the user's own server: ``MLFLOW_TRACKING_URI`` is removed)."""
    return {"SIGCLASS_CACHE_DIR": str(root / "cache"), "SIGCLASS_TRACKING_DIR": str(root / "tracking")}


def pytest_sessionstart(session):
    """Isolate the whole session before collection: module-scoped fixtures, which run before
    any function-scoped one, and environments copied at import see the isolated settings too."""
    session.config.stash[_ENTRIES] = _working_entries()
    root = Path(tempfile.mkdtemp(prefix="sigclass-tests-"))
    patch = pytest.MonkeyPatch()
    settings = isolated_settings(root)
    for name, value in settings.items():
        patch.setenv(name, value)
    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    session.config.stash[_ISOLATION] = (root, settings, patch)


def pytest_sessionfinish(session, exitstatus):
    """Fail the session if a test left a process running (stopped here) or wrote to the
    repository root or the working folder (MLflow's ``mlflow.db``, ``mlruns``...)."""
    problems = [f"left running, now killed: pid {pid}: {command}"
                for pid, command in stop_leftover_processes()]
    isolation = session.config.stash.get(_ISOLATION, None)
    if isolation is not None:
        root, _, patch = isolation
        patch.undo()
        shutil.rmtree(root, ignore_errors=True)
    before = session.config.stash.get(_ENTRIES, None)
    if before is not None:
        problems += [f"written to the working folder: {path}"
                     for path in sorted(_working_entries() - before)]
    if not problems:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.section("suite hygiene", sep="=", red=True, bold=True)
        for problem in problems:
            reporter.write_line(problem)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def stop_leftover_processes(grace_s: float = PROCESS_GRACE_S) -> list[tuple[int, str]]:
    """Kill the descendants of this process still running after ``grace_s`` seconds (a server
    the test stopped may still be shutting down) and return their ``(pid, command line)``.
    Zombies (exited, not yet reaped) do not count: ``wait_procs`` reaps those that are ours."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            command = " ".join(process.cmdline())
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            command = ""
        if not any(helper in command for helper in LIBRARY_HELPERS):
            found.append(process)
    _, alive = psutil.wait_procs(found, timeout=grace_s)
    leftovers = []
    for process in alive:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            leftovers.append((process.pid, " ".join(process.cmdline())))
            process.kill()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    psutil.wait_procs([p for p in alive if p.is_running()], timeout=grace_s)
    return leftovers


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, request):
    """Each test starts with the session's isolated settings, and MLflow tracking off unless the
    test turns it on (tests/test_tracking.py)."""
    for name, value in request.config.stash[_ISOLATION][1].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SIGCLASS_TRACKING", "off")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def write_image(path: Path, size=(40, 32), mode="RGB", seed=0, fmt=None) -> Path:
    """Write a random image of ``mode`` to ``path`` (format from the suffix unless ``fmt``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        array = rng.integers(0, 65535, (height, width), dtype=np.uint16)
        Image.fromarray(array).save(path, format=fmt)
        return path
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "P": 3, "LA": 2}[mode]
    array = rng.integers(0, 255, (height, width, channels), dtype=np.uint8)
    if channels == 1:
        image = Image.fromarray(array[:, :, 0], mode="L")
    elif mode == "P":
        image = Image.fromarray(array).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode == "LA":
        image = Image.fromarray(array, mode="LA")
    else:
        image = Image.fromarray(array, mode=mode)
    image.save(path, format=fmt)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Three classes of six distinct small RGB PNG images each."""
    root = tmp_path / "images"
    for c, name in enumerate(("cat", "dog", "fox")):
        for i in range(6):
            write_image(root / name / f"{name}_{i}.png", seed=100 * c + i)
    return root


@pytest.fixture
def colour_folder(tmp_path) -> Path:
    """An easy dataset: 3 classes told apart by colour, 12 images each (for learning tests)."""
    from PIL import Image

    root = tmp_path / "colours"
    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}
    for name, rgb in colours.items():
        for i in range(12):
            noise = rng.integers(-30, 30, (32, 32, 3))
            array = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / name / f"{name}_{i}.png")
    return root
