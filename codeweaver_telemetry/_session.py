# SPDX-License-Identifier: MIT OR Apache-2.0
"""A session: its id, clock and statistics, what it sent, and its one session event."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from codeweaver_telemetry._internal import logger
from codeweaver_telemetry._snapshot import snapshot, uuid7
from codeweaver_telemetry._types import Deferred

if TYPE_CHECKING:
    from codeweaver_telemetry.events.schemas import SessionEvent
    from codeweaver_telemetry.events.stats import SessionStatistics
    from codeweaver_telemetry.flags import FlagValue

__all__ = ["PendingSession", "Session", "session_event"]


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


class PendingSession(Deferred):
    """A session event's facts, read on the caller's thread; the pipeline builds the
    :class:`~codeweaver_telemetry.events.schemas.SessionEvent` on the worker (its first
    build imports the event models and compiles the scrubber: a few hundred milliseconds
    that ``end_session()`` must not cost the caller)."""

    __slots__ = ("duration", "options", "recorded")

    def __init__(
        self, recorded: dict[str, Any], duration: float | None, options: dict[str, Any]
    ) -> None:
        self.recorded = recorded
        self.duration = duration
        self.options = options

    def build(self) -> object:
        """The session event; when the facts cannot make one, only its duration."""
        try:
            return self.model()
        except Exception:  # the session still ends, and its duration still goes out
            logger.warning("codeweaver_telemetry: the session statistics could not be read")
            duration = self.duration
            if isinstance(duration, (int, float)) and not isinstance(duration, bool):
                return {"duration_seconds": round(float(duration), 3)}
            return {}

    def model(self) -> SessionEvent:
        """The :class:`SessionEvent` (raises when the facts cannot make one)."""
        from codeweaver_telemetry.events.schemas import SessionEvent

        return SessionEvent.from_snapshot(
            self.recorded, duration_seconds=self.duration, **self.options
        )


def session_event(
    session: Session | None,
    overrides: Mapping[str, Any] | None,
    stats: SessionStatistics | None,
) -> PendingSession:
    """The ``codeweaver_session`` event of ``session`` (or of ``stats`` alone), with the
    facts in ``overrides`` over the recorded ones, to be built by the pipeline."""
    options = dict(overrides or {})
    duration = options.pop("duration_seconds", None)
    if duration is None and session is not None:
        duration = time.monotonic() - session.started
    source = stats if stats is not None else (session.stats if session else None)
    recorded = source.snapshot() if source is not None else {}
    if stats is not None:  # the caller's object: what it returns may stay shared with it
        recorded = snapshot(recorded)
    return PendingSession(recorded, duration, options)
