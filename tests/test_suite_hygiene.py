"""The checks of tests/conftest.py that end a session, run on small inner pytest sessions."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

TESTS = Path(__file__).resolve().parent
PYPROJECT = TESTS.parent / "pyproject.toml"

# The inner session's conftest: this suite's own, loaded under another name.
CONFTEST = f"""
import importlib.util

spec = importlib.util.spec_from_file_location("suite_conftest", {str(TESTS / "conftest.py")!r})
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)
globals().update({{k: v for k, v in vars(suite).items() if not k.startswith("__")}})
"""


def _inner_session(folder: Path, test: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``test`` (a test module's source) as a pytest session of its own in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_inner.py").write_text(textwrap.dedent(test))
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-c", str(PYPROJECT), "--rootdir", str(folder),
                           str(folder / "test_inner.py")],
                          cwd=folder, env={**environment, **env}, capture_output=True,
                          text=True, timeout=300)


def test_a_process_left_running_fails_the_session_and_is_killed(tmp_path):
    pid_file = tmp_path / "pid"
    done = _inner_session(tmp_path / "inner", f"""
        import subprocess, sys

        def test_leaves_a_sleeper():
            process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(301)"])
            open({str(pid_file)!r}, "w").write(str(process.pid))
    """)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "1 passed" in output
    pid = int(pid_file.read_text())
    assert f"left running, now killed: pid {pid}: " in output
    assert "import time; time.sleep(301)" in output
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_stopped_process_does_not_fail_the_session(tmp_path):
    done = _inner_session(tmp_path / "inner", """
        import subprocess, sys

        def test_stops_its_sleeper():
            process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(302)"])
            process.terminate()
            process.wait()
    """)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "suite hygiene" not in done.stdout


def test_a_file_written_to_the_working_folder_fails_the_session(tmp_path):
    inner = tmp_path / "inner"
    done = _inner_session(inner, """
        from pathlib import Path

        def test_writes_a_store_here():
            Path("mlflow.db").write_text("")
    """)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"written to the working folder: {inner / 'mlflow.db'}" in done.stdout


def test_ci_fails_where_fridge_objects_is_missing(tmp_path):
    test = """
        def test_uses_the_photos(fridge):
            assert fridge.is_dir()
    """
    missing = str(tmp_path / "nowhere")
    locally = _inner_session(tmp_path / "local", test, SIGCLASS_FRIDGE=missing)
    assert locally.returncode == 0 and "1 skipped" in locally.stdout, locally.stdout
    in_ci = _inner_session(tmp_path / "ci", test, SIGCLASS_FRIDGE=missing, CI="true")
    assert in_ci.returncode == 1, in_ci.stdout
    assert "1 error" in in_ci.stdout
    assert f"fridgeObjects not found at {missing} (set SIGCLASS_FRIDGE); CI must have it" in in_ci.stdout


def test_slow_tests_get_a_longer_timeout(tmp_path):
    done = _inner_session(tmp_path / "inner", """
        import pytest

        @pytest.mark.slow
        def test_slow(request):
            assert request.node.get_closest_marker("timeout").args == (1800,)

        def test_quick(request):
            assert request.node.get_closest_marker("timeout") is None
            assert request.config.getini("timeout") == "600"
    """)
    assert done.returncode == 0, done.stdout + done.stderr
