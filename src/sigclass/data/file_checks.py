"""What a data file must be before sigclass reads it: a regular file, within a size limit, and
(unless links may be followed) inside the dataset root.

Everything is decided from ``os.stat`` before the file is opened, so a named pipe (which would
block the reader forever), a device (``/dev/zero`` never ends) or a 50 GB file never reaches a
parser. :func:`read_checked` then opens without blocking and checks the opened file again, so a
file swapped for a pipe between the check and the read is refused too.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

#: Largest data file read, in megabytes (``--max-file-mb``).
DEFAULT_MAX_FILE_MB = 512.0
_MB = 1024 * 1024


@dataclass(frozen=True)
class FileLimits:
    """What the data readers accept of a file.

    Attributes:
        max_file_mb: Largest file read, in megabytes (``--max-file-mb``).
        follow_symlinks: Read symbolic links whose target lies outside the dataset root
            (``--follow-symlinks``); links inside the root are always read.
    """

    max_file_mb: float = DEFAULT_MAX_FILE_MB
    follow_symlinks: bool = False

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * _MB)


class FileProblem(OSError):
    """A file sigclass will not read; ``reason`` says why and how to fix it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def file_problem(path: str | Path, limits: FileLimits | None = None, root: Path | None = None) -> str:
    """Why ``path`` must not be read, or ``""``; the file is never opened.

    Args:
        path: The file.
        limits: Size limit and link policy (defaults: 512 MB, links kept inside ``root``).
        root: The dataset root (resolved); a link whose target lies outside it is refused unless
            ``limits.follow_symlinks``. ``None``: no root to stay in.
    """
    limits = limits or FileLimits()
    path = Path(path)
    try:
        link = stat.S_ISLNK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot be examined: {exc.strerror or exc}"
    target = os.path.realpath(path) if link else ""
    via = f"a symbolic link to {target}, which is " if link else ""
    try:
        info = os.stat(path)
    except OSError as exc:
        if not link:
            return f"cannot be examined: {exc.strerror or exc}"
        return f"broken symbolic link (its target {target} does not exist); fix or remove the link"
    if not stat.S_ISREG(info.st_mode):
        return (f"not a regular file: {via}{_kind(info.st_mode)}; only regular files are read, "
                "replace it with the data file itself or remove it")
    real = Path(os.path.realpath(path)) if root is not None and not limits.follow_symlinks else None
    if real is not None and not real.is_relative_to(root):
        return (f"symbolic link leaving the dataset root (the file is {real}); copy the file "
                f"into {root}, or pass --follow-symlinks (follow_symlinks=True) to read such links")
    if info.st_size > limits.max_bytes:
        return (f"file of {info.st_size / _MB:,.1f} MB is over the {limits.max_file_mb:g} MB limit "
                "per file; shrink or split it, or raise --max-file-mb (max_file_mb)")
    return ""


def read_checked(path: str | Path, limits: FileLimits | None = None, root: Path | None = None) -> bytes:
    """The bytes of a file that passes :func:`file_problem`.

    Raises:
        FileProblem: The file is not one sigclass reads (the reason names the fix).
        OSError: The file cannot be read.
    """
    limits = limits or FileLimits()
    reason = file_problem(path, limits, root)
    if reason:
        raise FileProblem(reason)
    # O_NONBLOCK: should a pipe have replaced the file since the check, opening it cannot hang.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileProblem(f"not a regular file: {_kind(info.st_mode)}; only regular files are "
                              "read, replace it with the data file itself or remove it")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limits.max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > limits.max_bytes:
        raise FileProblem(f"file is over the {limits.max_file_mb:g} MB limit per file; shrink or "
                          "split it, or raise --max-file-mb (max_file_mb)")
    return data
