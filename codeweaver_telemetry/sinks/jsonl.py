# SPDX-License-Identifier: MIT OR Apache-2.0
"""LocalJSONLSink: the local log of every payload, one JSON object per line, readable by users.

With no PostHog key it is the only sink (the embedded default); with a key it records what
PostHog accepted. The file is ``<state_dir>/events.jsonl`` (mode 0600); past ``max_bytes``
it is rotated once to ``events.jsonl.1``, so at most twice ``max_bytes`` is kept. A batch
is written whole or not at all, and never through a symbolic link.

The log is tamper-evident: each line also carries ``seq`` and ``prev`` (the hash of the
line before), and ``events.head`` records the chain's end; see
:mod:`codeweaver_telemetry._logchain` and its ``verify_log``. :func:`read_log` returns
the payloads without these two fields.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from codeweaver_telemetry._codec import payload_line
from codeweaver_telemetry._files import (
    LOCK_FILE,
    NotRegularFileError,
    append_whole,
    describe_os_error,
    ensure_private_dir,
    exclusive_lock,
    open_append,
    read_regular,
)
from codeweaver_telemetry._internal import logger
from codeweaver_telemetry._logchain import (
    HEAD_FILE,
    LOG_FILE,
    OLD_LOG_FILE,
    Head,
    chain_lines,
    read_head,
    rebuild_head,
    reconcile,
    write_head,
)
from codeweaver_telemetry._types import Event, ExportResult

__all__ = ["LOG_FILE", "LocalJSONLSink", "read_log"]

_MAX_LOG_READ = 64 * 1024 * 1024  # far above what rotation keeps (2 x 5 MiB by default)


class LocalJSONLSink:
    """Append finished events to a JSON Lines file.

    Each batch is appended whole or not at all, under the state directory's lock (several
    processes may share the log): a full disk never leaves half a line. The file is never
    written through a symbolic link. Each line is chained (``seq``, ``prev``) from the head
    in ``events.head``, which moves with the same lock right after the append; if it cannot
    be written, the batch is cut back out and kept for a later try.

    Args:
        directory: the state directory; created (0700) on first write.
        max_bytes: rotate the file when it grows past this size.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, max_bytes: int = 5 * 1024 * 1024
    ) -> None:
        self.path = Path(directory) / LOG_FILE
        self._max_bytes = max_bytes

    def export(self, batch: Sequence[Event]) -> ExportResult:
        """Append the batch; RETRY (with one warning saying why) if it cannot be written."""
        lines = [payload_line(e) for e in batch]
        directory = self.path.parent
        try:
            ensure_private_dir(directory, parents=True, follow=True)
            # The file lock keeps out other processes and this one's other threads alike
            # (each export opens the lock file anew), and no thread lock is left locked
            # in a forked child.
            with exclusive_lock(directory / LOCK_FILE):
                self._append(directory, lines)
        except OSError as exc:
            logger.warning(
                "codeweaver_telemetry: events could not be written to the local log %s: %s; "
                "they are kept for a later try",
                self.path,
                describe_os_error(exc),
            )
            return ExportResult.RETRY
        return ExportResult.SUCCESS

    def _append(self, directory: Path, lines: list[str]) -> None:
        """Chain ``lines`` from the head, append them, then move the head (under the lock)."""
        head = self._head(directory)
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            size = 0
        else:
            if not stat.S_ISREG(info.st_mode):  # a link, a FIFO: never read nor written
                raise NotRegularFileError(errno.EINVAL, "not a regular file", str(self.path))
            size = info.st_size
        separator = b""
        if size != head.size:  # a crash before the head update, a cut end, another writer
            try:
                data = read_regular(self.path, _MAX_LOG_READ)
            except FileNotFoundError:  # removed by hand: the chain goes on, the gap shows
                data = b""
            head, separator = reconcile(data, head)
            size = head.size - len(separator)
        if size > self._max_bytes:
            # The head moves first: a crash after it leaves the chain longer than the head
            # says at its start, which verifies; the other order would not.
            head = head.rotated()
            write_head(directory, head)
            # Renames the entry itself: a link at either name is never followed.
            os.replace(self.path, directory / OLD_LOG_FILE)
            separator = b""
        data, seq, last = chain_lines(lines, head.seq, head.hash)
        fd = open_append(self.path)
        try:
            before = os.fstat(fd).st_size
            append_whole(fd, separator + data)
            try:
                write_head(directory, head.advanced(seq, last, before + len(separator + data)))
            except OSError:
                # The lines and the head go together: without the head, take the lines back.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)
                raise
        finally:
            os.close(fd)

    def _head(self, directory: Path) -> Head:
        try:
            head = read_head(directory)
        except (OSError, ValueError):
            head = None
        if head is None:
            head = rebuild_head(directory)
            if head.seq:
                logger.warning(
                    "codeweaver_telemetry: the head of the local log (%s) was missing or "
                    "unreadable; it was rebuilt from the log",
                    directory / HEAD_FILE,
                )
            # Written before any line, so that a crash in the first batch leaves a head.
            write_head(directory, head)
        return head

    def shutdown(self, timeout_s: float) -> None:
        """Nothing is held open between writes."""


def read_log(directory: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the payloads in the local log, oldest first: exactly what was recorded for
    sending (with no PostHog key) or what PostHog accepted (the audit log).

    Args:
        directory: the state directory (``client.settings.resolved_state_dir``; by default
            ``$CODEWEAVER_HOME/telemetry``).

    Returns:
        An iterator of dicts (``event``, ``distinct_id``, ``timestamp``, ``uuid``,
        ``properties``), without the chain's ``seq`` and ``prev``; the rotated file comes
        first. Broken lines (a partial last line
        left by an older version on a full disk, say) are skipped. A path that is not a
        regular file (a FIFO) reads as empty rather than blocking.
    """
    base = Path(directory)
    for path in (base / OLD_LOG_FILE, base / LOG_FILE):
        try:
            data = read_regular(path, _MAX_LOG_READ)
        except OSError:  # missing, not a regular file, unreadable
            continue
        for line in data.splitlines():
            try:
                payload = json.loads(line)
            except ValueError:
                continue
            if isinstance(payload, dict):
                payload.pop("seq", None)  # the chain's fields are the log's, not the payload's
                payload.pop("prev", None)
                yield payload
