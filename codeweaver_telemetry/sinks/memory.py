# SPDX-License-Identifier: MIT OR Apache-2.0
"""InMemorySink (what was sent, for tests and previews); FunctionSink (behaviour as a function)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from codeweaver_telemetry._codec import to_payload  # re-exported: previews import it here
from codeweaver_telemetry._internal import in_forked_child
from codeweaver_telemetry._types import Event, ExportResult

__all__ = ["FunctionSink", "InMemorySink", "to_payload"]


class InMemorySink:
    """Keeps every exported event in memory.

    ``events()`` returns them as the local log records them (``_codec.to_payload``): dicts
    with ``event``, ``distinct_id``, ``timestamp``, ``uuid`` and ``properties``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self.shut_down = False
        in_forked_child(self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a fork may land while the worker holds it

    def export(self, batch: Sequence[Event]) -> ExportResult:
        """Store the batch."""
        with self._lock:
            self._events.extend(batch)
        return ExportResult.SUCCESS

    def shutdown(self, timeout_s: float) -> None:
        """Mark the sink as shut down (events stay readable)."""
        self.shut_down = True

    def events(self) -> list[dict[str, Any]]:
        """Every exported event, oldest first, as payload dicts."""
        with self._lock:
            return [to_payload(e) for e in self._events]

    def clear(self) -> None:
        """Forget what was exported."""
        with self._lock:
            self._events.clear()


class FunctionSink:
    """A sink whose behaviour is a function of the batch: it may return, raise or sleep.

    Args:
        handler: called with each batch; its return value is the export result (None means
            SUCCESS).
    """

    def __init__(self, handler: Callable[[Sequence[Event]], ExportResult | None]) -> None:
        self._handler = handler

    def export(self, batch: Sequence[Event]) -> ExportResult:
        """Call the handler."""
        return self._handler(batch) or ExportResult.SUCCESS

    def shutdown(self, timeout_s: float) -> None:
        """Nothing to release."""
