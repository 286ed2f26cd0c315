"""The processes a ``sigclass`` command starts, stopped with it whatever stops it.

Every child starts through :func:`start`, in a session (and so a process group) of its own: the
command can then stop the child together with what the child starts in turn (``mlflow server``
runs uvicorn in a second process), and a Ctrl-C in the terminal reaches the command alone, which
forwards it. :func:`guarded` wraps a command: SIGTERM and SIGHUP raise :class:`Stopped`, a
``KeyboardInterrupt``, so the commands' own clean-up runs as for Ctrl-C, and on the way out every
child's group gets the signal that stopped the command, then SIGKILL after :data:`GRACE_S`
seconds. An ``atexit`` hook does the same for a command that ends another way. A command killed
outright (SIGKILL) runs no code: on Linux each child asks the kernel for SIGTERM when its parent
dies (``PR_SET_PDEATHSIG``), which stops the child itself though not what it started.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # SIGINT raises KeyboardInterrupt already
GRACE_S = 10.0  # how long a child's group has to stop before SIGKILL
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

_children: list[subprocess.Popen] = []
_hooked = False
_owner = os.getpid()  # the process whose children these are; a fork of it has none


class Stopped(KeyboardInterrupt):
    """The command received ``signum`` (SIGTERM, SIGHUP): it stops as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def stop_signal(interrupt: BaseException) -> int:
    """The signal behind a ``KeyboardInterrupt``: SIGINT unless :class:`Stopped` says otherwise."""
    return getattr(interrupt, "signum", signal.SIGINT)


def start(command: list[str], **popen_options) -> subprocess.Popen:
    """Start ``command`` in a process group of its own that stops when this process stops.

    Linux sends the death signal when the *thread* that started the child ends: start children
    from the main thread (as the commands do), not from a short-lived worker thread.

    Args:
        command: Program and arguments.
        **popen_options: Passed to :class:`subprocess.Popen` (``env``, ``stdout``...).

    Returns:
        The running process.
    """
    global _hooked, _owner
    if not _hooked:
        atexit.register(stop_all)
        _hooked = True
    if os.getpid() != _owner:  # a fork of the process that started the listed ones
        _children.clear()
        _owner = os.getpid()
    process = subprocess.Popen(command, start_new_session=True,
                               preexec_fn=_die_with_parent(), **popen_options)
    _children.append(process)
    return process


def _die_with_parent() -> Callable[[], None] | None:
    """A function run in the child before ``exec`` asking Linux for SIGTERM when the parent dies.

    ``prctl`` is looked up here, in the parent: the child between ``fork`` and ``exec`` only calls
    it and ``getppid``. Elsewhere (macOS), or without a C library, None: no such protection.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def protect() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request: act on it now
            os.kill(os.getpid(), signal.SIGTERM)

    return protect


def _signal_group(process: subprocess.Popen, signum: int) -> bool:
    """Send ``signum`` to the process group led by ``process``; False when the group is gone."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):  # gone, or its id reused by someone else's
        return False
    return True


def stop_all(signum: int = signal.SIGTERM, grace_s: float = GRACE_S) -> None:
    """Stop every child started by :func:`start` and everything in the children's groups.

    Each group gets ``signum``; a group with processes left after ``grace_s`` seconds gets SIGKILL.
    A second interrupt while waiting kills at once.
    """
    running = list(_children) if os.getpid() == _owner else []  # a fork stops nothing
    _children.clear()
    try:
        for process in running:
            _signal_group(process, signum)
        deadline = time.monotonic() + grace_s
        for process in running:
            # the group outlives its leader while the leader's own children shut down
            while time.monotonic() < deadline:
                process.poll()
                if not _signal_group(process, 0):
                    break
                time.sleep(0.05)
    finally:
        for process in running:
            _signal_group(process, signal.SIGKILL)
            with contextlib.suppress(OSError):
                process.wait()


def _stopping_handler(owner: int) -> Callable[[int, object], None]:
    """The handler raising :class:`Stopped` in process ``owner``. A process forked from it
    (a ``multiprocessing`` worker, which ``Pool.terminate`` stops with SIGTERM) inherits the
    handler: there the signal does what it did before, end the process."""

    def handler(signum: int, frame) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Stopped(signum)

    return handler


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Run a command so that SIGTERM and SIGHUP stop it as Ctrl-C does, and its children with it.

    The previous signal handlers come back on the way out (tests run commands in-process); an
    ignored signal stays ignored (``nohup sigclass train ...`` outlives its terminal). Signal
    handlers belong to the main thread: elsewhere only the children are stopped on the way out.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        handler = _stopping_handler(os.getpid())
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's choice stands
                previous[signum] = signal.signal(signum, handler)
    try:
        yield
    except KeyboardInterrupt as interrupt:
        stop_all(stop_signal(interrupt))
        raise
    finally:
        try:
            stop_all()
        finally:
            for signum, handler in previous.items():  # None: a handler set outside Python
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
