# SPDX-License-Identifier: MIT OR Apache-2.0
"""LocalJSONLSink: the local log of every payload, one JSON object per line, readable by users.

With no PostHog key it is the only sink (the embedded default); with a key it records what
PostHog accepted. The file is ``<state_dir>/events.jsonl`` (mode 0600); past ``max_bytes``
it is rotated once to ``events.jsonl.1``, so at most twice ``max_bytes`` is kept.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from codeweaver_telemetry._types import Event, ExportResult
from codeweaver_telemetry.sinks.memory import to_payload

__all__ = ["LOG_FILE", "LocalJSONLSink", "read_log"]

LOG_FILE = "events.jsonl"


class LocalJSONLSink:
    """Append finished events to a JSON Lines file.

    Args:
        directory: the state directory; created (0700) on first write.
        max_bytes: rotate the file when it grows past this size.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, max_bytes: int = 5 * 1024 * 1024
    ) -> None:
        self.path = Path(directory) / LOG_FILE
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def export(self, batch: Sequence[Event]) -> ExportResult:
        """Append the batch; RETRY if the file cannot be written."""
        lines = "".join(
            json.dumps(to_payload(e), ensure_ascii=False, separators=(",", ":")) + "\n"
            for e in batch
        )
        try:
            with self._lock:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._rotate_if_needed()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as fh:
                    fh.write(lines)
        except OSError:
            return ExportResult.RETRY
        return ExportResult.SUCCESS

    def _rotate_if_needed(self) -> None:
        try:
            if self.path.stat().st_size > self._max_bytes:
                os.replace(self.path, self.path.with_name(LOG_FILE + ".1"))
        except FileNotFoundError:
            pass

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
        ``properties``); the rotated file comes first, and broken lines are skipped.
    """
    base = Path(directory) / LOG_FILE
    for path in (base.with_name(LOG_FILE + ".1"), base):
        try:
            with path.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue
        except FileNotFoundError:
            continue
