# SPDX-License-Identifier: MIT OR Apache-2.0
"""Careful file access for everything the library reads and writes on the user's disk.

- Reads open with ``O_NONBLOCK`` and go on only for a regular file, so a FIFO or a device
  planted at ``state.json`` or ``codeweaver.toml`` can never hang the host; they read at
  most a bounded number of bytes.
- Writes inside the state directory never follow a symbolic link (``O_NOFOLLOW``, and a
  symlinked directory is refused), so a link planted there cannot make the library append
  to, create or replace a file elsewhere.
- :func:`describe_os_error` turns an ``OSError`` into words a user can act on ("the disk is
  full"), for the one warning that says what was lost.

Every failure is an ``OSError``: callers already treat those as "could not read/write".
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "LOCK_FILE",
    "NotRegularFileError",
    "TooLargeError",
    "append_whole",
    "describe_os_error",
    "ensure_private_dir",
    "exclusive_lock",
    "open_append",
    "open_lock",
    "overwrite_small",
    "read_regular",
    "write_atomic",
]

LOCK_FILE = ".lock"
"""The lock file in the state directory: state updates and log appends hold it."""

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)  # Windows


class NotRegularFileError(OSError):
    """The path is a FIFO, a device, a directory or a symbolic link where a file was expected."""


class TooLargeError(OSError):
    """The file is larger than the library will read."""


def _check_regular(fd: int, path: str | os.PathLike[str]) -> os.stat_result:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
    return info


def read_regular(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; never blocks on open.

    A symbolic link is followed (a user's config file may be one), but what it names must
    be a regular file.

    Raises:
        FileNotFoundError: there is no file.
        NotRegularFileError: the path is not a regular file (a FIFO, a device...).
        TooLargeError: the file holds more than ``max_bytes``.
        OSError: any other reading problem.
    """
    fd = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC | _BINARY)
    try:
        info = _check_regular(fd, path)
        if info.st_size > max_bytes:
            raise TooLargeError(errno.EFBIG, f"larger than {max_bytes} bytes", str(path))
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:  # it grew while we read
            raise TooLargeError(errno.EFBIG, f"larger than {max_bytes} bytes", str(path))
        return data
    finally:
        os.close(fd)


def ensure_private_dir(
    path: str | os.PathLike[str], *, parents: bool = False, follow: bool = False
) -> Path:
    """Create ``path`` (mode 0700) if needed; refuse it if it is a symbolic link.

    ``follow=True`` accepts a link to a directory: for the state directory itself, which
    the user chose (and may have moved elsewhere with a link). Directories *inside* it are
    never followed.

    Raises:
        NotRegularFileError: ``path`` is a symbolic link or not a directory.
    """
    directory = Path(path)
    directory.mkdir(mode=0o700, parents=parents, exist_ok=True)
    info = os.stat(directory) if follow else os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise NotRegularFileError(errno.ENOTDIR, "a symbolic link or not a directory", str(path))
    return directory


def _open_nofollow(path: str | os.PathLike[str], flags: int) -> int:
    fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY, 0o600)
    try:
        _check_regular(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(path: str | os.PathLike[str]) -> int:
    """Open (create, 0600) a regular file for appending, never through a symbolic link."""
    return _open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def open_lock(path: str | os.PathLike[str]) -> int:
    """Open (create, 0600) a lock file, never through a symbolic link."""
    return _open_nofollow(path, os.O_RDWR | os.O_CREAT)


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike[str], timeout_s: float = 2.0) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created 0600, never through a link) across
    processes for the block.

    Waits at most ``timeout_s`` (the lock is held for milliseconds; a process stopped while
    holding it must not hang every other one).

    Raises:
        TimeoutError: the lock stayed taken for ``timeout_s``.
    """
    fd = open_lock(lock_path)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # type: ignore[attr-defined]
            try:
                yield
            finally:
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
        else:
            deadline = time.monotonic() + timeout_s
            pause = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(
                            errno.ETIMEDOUT, "the lock stayed taken", str(lock_path)
                        ) from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` whole or not at all: on a failed or short write (a full disk), the
    file is cut back to its size before the write, and the error is raised.

    The caller holds whatever lock keeps other writers out of the file meanwhile.
    """
    before = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            if written <= 0:  # pragma: no cover - write() raises rather than return 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[written:]
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, before)
        raise


def overwrite_small(path: str | os.PathLike[str], data: bytes) -> None:
    """Overwrite a small file (created 0600) in place with one write from its start, never
    through a symbolic link or into a file with other hard links.

    For a fixed-size record rewritten under a lock (the log's head): far cheaper than
    :func:`write_atomic`, whose rename makes ext4 flush the new file. A reader holding the
    same lock never sees it half-written; a power cut may leave it stale or torn, so it
    must be something that can be rebuilt.
    """
    fd = _open_nofollow(path, os.O_WRONLY | os.O_CREAT)
    try:
        info = os.fstat(fd)
        if info.st_nlink > 1:
            raise NotRegularFileError(errno.EMLINK, "a file with other hard links", str(path))
        if info.st_size > len(data):
            os.ftruncate(fd, len(data))
        if os.write(fd, data) != len(data):  # pragma: no cover - a short write of < 1 block
            raise OSError(errno.EIO, "short write", str(path))
    finally:
        os.close(fd)


def write_atomic(directory: str | os.PathLike[str], name: str, data: bytes) -> Path:
    """Write ``directory/name`` (0600) atomically: a private temp file, fsync, rename.

    The rename replaces a symbolic link at ``name`` rather than writing through it.
    """
    import tempfile  # only when writing: reading and appending never need it

    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        try:
            append_whole(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        target = Path(directory) / name
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file size limit was reached",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ELOOP: "a symbolic link is in the way",
}


def describe_os_error(exc: OSError) -> str:
    """A short, actionable reason: ``"the disk is full (ENOSPC)"``."""
    if isinstance(exc, NotRegularFileError):
        return f"{exc.filename} is {exc.strerror}"
    code = exc.errno
    name = errno.errorcode.get(code, "") if code is not None else ""
    reason = _REASONS.get(code or -1) or (exc.strerror or type(exc).__name__)
    return f"{reason} ({name})" if name else reason
