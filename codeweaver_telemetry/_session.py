# SPDX-License-Identifier: MIT OR Apache-2.0
"""A session: its id, clock and statistics, what it sent, and its one session event."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from codeweaver_telemetry._snapshot import snapshot, uuid7

if TYPE_CHECKING:
    from codeweaver_telemetry.events.schemas import SessionEvent
    from codeweaver_telemetry.events.stats import SessionStatistics
    from codeweaver_telemetry.flags import FlagValue

__all__ = ["Session", "session_event"]


class Session:
    """One session of the app: what it records and what it has sent (errors, exposures)."""

    __slots__ = ("errors_sent", "flags_called", "id", "started", "stats")

    def __init__(self) -> None:
        from codeweaver_telemetry.events.stats import SessionStatistics

        self.id = uuid7()
        self.started = time.monotonic()
        self.stats = SessionStatistics()
        self.errors_sent: dict[str, int] = {}
        self.flags_called: set[tuple[str, FlagValue]] = set()


def session_event(
    session: Session | None,
    overrides: Mapping[str, Any] | None,
    stats: SessionStatistics | None,
) -> SessionEvent:
    """The ``codeweaver_session`` event of ``session`` (or of ``stats`` alone), with the
    facts in ``overrides`` over the recorded ones."""
    from codeweaver_telemetry.events.schemas import SessionEvent

    options = dict(overrides or {})
    duration = options.pop("duration_seconds", None)
    if duration is None and session is not None:
        duration = time.monotonic() - session.started
    source = stats if stats is not None else (session.stats if session else None)
    recorded = source.snapshot() if source is not None else {}
    if stats is not None:  # the caller's object: what it returns may stay shared with it
        recorded = snapshot(recorded)
    return SessionEvent.from_snapshot(recorded, duration_seconds=duration, **options)
