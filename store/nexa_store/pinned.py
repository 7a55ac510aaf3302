"""Local inputs read through the descriptors the check opened: no gap between time of check and time of use.

A tenant granted a local directory controls what is in it. Checking a path and
then handing the engine that *path* leaves a window: between the two, a checked
file (or one of its parent directories) can be swapped for a symlink into the
artifact store. So the check itself opens each file, walking the real path one
component at a time with ``O_NOFOLLOW`` (a component that has become a link is
refused), and the engine reads a private *view*: a directory of links to
``/proc/<pid>/fd/<n>``. Opening such a link reopens the inode the check opened,
whatever has happened to the names since. The descriptors live until the attempt
ends (``release_views``).

Where ``/proc`` is missing (macOS), ``/dev/fd`` serves the same purpose for the
process itself, which is where engines run.
"""

from __future__ import annotations

import os
import resource
import shutil
import stat
import threading
from pathlib import Path, PurePosixPath

# The most files one input may pin: a model directory holds tens, a parquet
# dataset directory hundreds. Beyond this the input is refused, not half-read.
MAX_PINNED_FILES = 4096

_lock = threading.Lock()
_pins: dict[Path, list[int]] = {}


class PinError(OSError):
    """A checked path could not be opened as it was checked (it changed, or it is not a plain file)."""


def _fd_dir() -> str:
    if os.path.isdir("/proc/self/fd"):
        # The pid, not "self": a child process (a serving or tokenizer helper) reads the same inode.
        return f"/proc/{os.getpid()}/fd"
    return "/dev/fd"


def open_real_file(real: Path) -> int:
    """A read-only descriptor for the regular file at canonical path ``real``, opened without following links.

    ``real`` comes from ``os.path.realpath``, so none of its components is a link;
    one that is a link now was swapped in after the check, and is refused
    (``PinError``). FIFOs and devices are refused without blocking on them.
    """
    if not real.is_absolute():
        raise PinError(f"{real}: not an absolute path")
    parts = real.parts[1:]
    if not parts:
        raise PinError(f"{real}: not a file")
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, flags_dir, dir_fd=fd)
            except OSError as exc:
                raise PinError(f"{real}: {part!r} changed after it was checked ({exc.strerror})") from exc
            os.close(fd)
            fd = next_fd
        try:
            file_fd = os.open(
                parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd
            )
        except OSError as exc:
            raise PinError(f"{real}: cannot be opened as it was checked ({exc.strerror})") from exc
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise PinError(f"{real}: not a regular file")
    os.set_blocking(file_fd, True)
    return file_fd


def _make_room(count: int) -> None:
    """Raise the soft descriptor limit toward the hard one when ``count`` more are about to be held."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sum(len(v) for v in _pins.values()) + count + 256
    if soft != resource.RLIM_INFINITY and wanted > soft:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def pin_view(view: Path, files: list[tuple[PurePosixPath, Path]]) -> Path:
    """Build ``view``: for each (relative name, checked real path), a link to a descriptor opened now.

    Raises ``PinError`` (the view is removed) when a file cannot be opened as it
    was checked, or when there are more than ``MAX_PINNED_FILES``.
    """
    if len(files) > MAX_PINNED_FILES:
        raise PinError(f"{len(files)} files; at most {MAX_PINNED_FILES} can be read from one local input")
    release_views(view)
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir(parents=True)
    opened: list[int] = []
    with _lock:
        _make_room(len(files))
    try:
        base = _fd_dir()
        for rel, real in files:
            fd = open_real_file(real)
            opened.append(fd)
            target = view / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f"{base}/{fd}")
    except BaseException:
        for fd in opened:
            os.close(fd)
        shutil.rmtree(view, ignore_errors=True)
        raise
    with _lock:
        _pins[view] = opened
    return view


def release_views(under: Path) -> int:
    """Close the descriptors of every view at or below ``under`` (an attempt's work directory); returns how many."""
    closed = 0
    with _lock:
        for view in [v for v in _pins if v == under or under in v.parents]:
            for fd in _pins.pop(view):
                try:
                    os.close(fd)
                except OSError:
                    pass
                closed += 1
    return closed


def pinned_count() -> int:
    """Descriptors held by live views (for tests and leak checks)."""
    with _lock:
        return sum(len(v) for v in _pins.values())
