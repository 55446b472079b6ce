# SPDX-License-Identifier: MIT OR Apache-2.0
"""LocalJSONLSink: the local log of every payload, one JSON object per line, readable by users.

With no PostHog key it is the only sink (the embedded default); with a key it records what
PostHog accepted. The file is ``<state_dir>/events.jsonl`` (mode 0600); past ``max_bytes``
it is rotated once to ``events.jsonl.1``, so at most twice ``max_bytes`` is kept. A batch
is written whole or not at all, and never through a symbolic link.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from codeweaver_telemetry._codec import payload_line
from codeweaver_telemetry._files import (
    LOCK_FILE,
    append_whole,
    describe_os_error,
    ensure_private_dir,
    exclusive_lock,
    open_append,
    read_regular,
)
from codeweaver_telemetry._internal import logger
from codeweaver_telemetry._types import Event, ExportResult

__all__ = ["LOG_FILE", "LocalJSONLSink", "read_log"]

LOG_FILE = "events.jsonl"


class LocalJSONLSink:
    """Append finished events to a JSON Lines file.

    Each batch is appended whole or not at all, under the state directory's lock (several
    processes may share the log): a full disk never leaves half a line. The file is never
    written through a symbolic link.

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
        data = "".join(payload_line(e) + "\n" for e in batch).encode("utf-8")
        directory = self.path.parent
        try:
            ensure_private_dir(directory, parents=True, follow=True)
            # The file lock keeps out other processes and this one's other threads alike
            # (each export opens the lock file anew), and no thread lock is left locked
            # in a forked child.
            with exclusive_lock(directory / LOCK_FILE):
                self._rotate_if_needed()
                fd = open_append(self.path)
                try:
                    append_whole(fd, data)
                finally:
                    os.close(fd)
        except OSError as exc:
            logger.warning(
                "codeweaver_telemetry: events could not be written to the local log %s: %s; "
                "they are kept for a later try",
                self.path,
                describe_os_error(exc),
            )
            return ExportResult.RETRY
        return ExportResult.SUCCESS

    def _rotate_if_needed(self) -> None:
        try:
            if os.lstat(self.path).st_size > self._max_bytes:
                # Renames the entry itself: a link at either name is never followed.
                os.replace(self.path, self.path.with_name(LOG_FILE + ".1"))
        except FileNotFoundError:
            pass

    def shutdown(self, timeout_s: float) -> None:
        """Nothing is held open between writes."""


_MAX_LOG_READ = 64 * 1024 * 1024  # far above what rotation keeps (2 x 5 MiB by default)


def read_log(directory: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the payloads in the local log, oldest first: exactly what was recorded for
    sending (with no PostHog key) or what PostHog accepted (the audit log).

    Args:
        directory: the state directory (``client.settings.resolved_state_dir``; by default
            ``$CODEWEAVER_HOME/telemetry``).

    Returns:
        An iterator of dicts (``event``, ``distinct_id``, ``timestamp``, ``uuid``,
        ``properties``); the rotated file comes first. Broken lines (a partial last line
        left by an older version on a full disk, say) are skipped. A path that is not a
        regular file (a FIFO) reads as empty rather than blocking.
    """
    base = Path(directory) / LOG_FILE
    for path in (base.with_name(LOG_FILE + ".1"), base):
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
                yield payload
