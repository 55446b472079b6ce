# SPDX-License-Identifier: MIT OR Apache-2.0
"""The vocabulary of the event path: Event, Stage, Sink, ExportResult, ConsentVote.

This module imports nothing else of the package.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeAlias, runtime_checkable

__all__ = [
    "ERROR_EVENT",
    "FLAG_CALLED_EVENT",
    "HEARTBEAT_EVENT",
    "LIBRARY_KEYS",
    "SEARCH_EVENT",
    "SESSION_EVENT",
    "ConsentSource",
    "ConsentVote",
    "Deferred",
    "Event",
    "ExportResult",
    "SessionMetadata",
    "Sink",
    "Stage",
]


@dataclass(slots=True)
class Event:
    """One event on its way out.

    Before the privacy pipeline, ``properties`` is the caller's snapshot and ``model`` may
    hold a model to serialize; after it, ``properties`` is the finished, scrubbed, JSON-safe
    payload and ``model`` is None.
    """

    name: str
    properties: dict[str, Any]
    timestamp: float
    """Seconds since the epoch, taken on the caller's thread."""
    uuid: str
    """The event's id (PostHog dedupes on it); the pipeline assigns one when empty."""
    distinct_id: str = ""
    model: object | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    """System properties set by the library (session id, flags); added after privacy stages."""
    attempts: int = 0
    """Failed deliveries so far (the worker spools an event after ``max_retries``)."""


SESSION_EVENT = "codeweaver_session"
"""The name of the shipped session event."""
SEARCH_EVENT = "codeweaver_search"
"""The name of the shipped search event."""
ERROR_EVENT = "codeweaver_error"
"""The name of the shipped error event."""
HEARTBEAT_EVENT = "codeweaver_heartbeat"
"""The name of the shipped heartbeat event."""
FLAG_CALLED_EVENT = "$feature_flag_called"
"""PostHog's exposure event, sent by the library when the app reads a flag."""
LIBRARY_KEYS = frozenset(
    {
        "$lib",
        "$lib_version",
        "$os",
        "$os_version",
        "$python_version",
        "$geoip_disable",
        "$process_person_profile",
        "$session_id",
        "$feature_flag",
        "$feature_flag_response",
    }
)
"""The ``$`` properties the pipeline itself sets (besides ``$feature/<key>``); no other
``$`` key ever leaves it."""


class Deferred:
    """A model whose building waits for the worker thread.

    The caller's thread gathers plain, immutable data (cheap); the pipeline's first stage
    calls :meth:`build` and serializes the model it returns, like any other.
    """

    __slots__ = ()

    def build(self) -> object:
        """Return the model to serialize."""
        raise NotImplementedError


@dataclass(slots=True)
class SessionMetadata:
    """A session's metadata: the caller's snapshot, serialized once, on the worker thread."""

    raw: dict[str, Any]
    serialized: dict[str, Any] | None = None


Stage: TypeAlias = Callable[[Event], "Event | None"]
"""One step of the privacy pipeline; return None to drop the event."""


class ExportResult(enum.Enum):
    """What a sink did with a batch."""

    SUCCESS = "success"
    """Delivered (or durably written)."""
    RETRY = "retry"
    """Not delivered, worth trying again later (network down, 5xx, 429)."""
    DROP = "drop"
    """Not delivered and never will be (rejected as malformed or unauthorised)."""
    SPLIT = "split"
    """Rejected as too large as a whole (HTTP 413): send it again in halves."""


@runtime_checkable
class Sink(Protocol):
    """One destination for finished, scrubbed batches. Knows nothing of consent or privacy."""

    def export(self, batch: Sequence[Event]) -> ExportResult:
        """Deliver a batch; never raise for delivery problems, return RETRY or DROP."""
        ...

    def shutdown(self, timeout_s: float) -> None:
        """Release resources, spending at most ``timeout_s`` seconds."""
        ...


class ConsentVote(NamedTuple):
    """A consent source's verdict: allowed or not, and a human reason for ``status``."""

    allowed: bool
    reason: str


ConsentSource: TypeAlias = Callable[[], "ConsentVote | None"]
"""A source of consent; None means it has no opinion and the next source decides."""
