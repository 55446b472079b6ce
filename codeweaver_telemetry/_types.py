# SPDX-License-Identifier: MIT OR Apache-2.0
"""The vocabulary of the event path: Event, Stage, Sink, ExportResult, ConsentVote.

This module imports nothing else of the package.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol, TypeAlias, runtime_checkable

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
    "HostState",
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
    encoded: tuple[str, str] | None = field(default=None, repr=False, compare=False)
    """The finished properties as JSON and the timestamp as ISO 8601, once encoded
    (``_codec``): the wire, the local log and the spool share them."""


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


class HostState:
    """What one client knows of its PostHog host, shared by event delivery and flag fetches.

    ``paused_until`` (``time.monotonic()`` seconds): the host's ``Retry-After``, from either
    a ``/batch/`` or a ``/flags/`` answer; no request of any kind goes before it.
    ``down_since``: when event delivery found the host not answering (None while it
    answers); flag fetches are not tried meanwhile (the cache serves what it has).
    """

    __slots__ = ("down_since", "paused_until")

    def __init__(self) -> None:
        self.paused_until = 0.0
        self.down_since: float | None = None

    def pause(self, seconds: float, now: float) -> None:
        """The host asked for ``seconds`` without requests (at most 60 are honoured)."""
        if seconds > 0:  # also refuses NaN
            self.paused_until = max(self.paused_until, now + min(seconds, 60.0))

    def blocked(self, now: float) -> str | None:
        """Why no request should go now, or None."""
        if now < self.paused_until:
            return "the host asked for a pause (Retry-After)"
        if self.down_since is not None:
            return "the host is not answering"
        return None


class ExportResult:
    """What a sink did with a batch: one of four kinds, a retry with the host's wait.

    The kinds are the constants :attr:`SUCCESS`, :attr:`RETRY`, :attr:`DROP` and
    :attr:`SPLIT`; :meth:`retry` makes a RETRY that carries the host's ``Retry-After``.
    Results are immutable and compare (and hash) by kind alone, so
    ``ExportResult.retry(5.0) == ExportResult.RETRY``: compare with ``==``, not ``is``.
    """

    __slots__ = ("_retry_after", "_value")

    SUCCESS: ClassVar[ExportResult]
    """Delivered (or durably written)."""
    RETRY: ClassVar[ExportResult]
    """Not delivered, worth trying again later (network down, 5xx, 429)."""
    DROP: ClassVar[ExportResult]
    """Not delivered and never will be (rejected as malformed or unauthorised)."""
    SPLIT: ClassVar[ExportResult]
    """Rejected as too large as a whole (HTTP 413): send it again in halves."""

    _value: str
    _retry_after: float | None

    def __new__(cls, value: str, retry_after: float | None = None) -> ExportResult:
        """The result of kind ``value`` (``"success"``, ``"retry"``, ``"drop"`` or
        ``"split"``); without a ``retry_after``, the shared constant of that kind."""
        if value not in _EXPORT_KINDS:
            raise ValueError(f"{value!r} is not a valid ExportResult")
        after = _positive_seconds(retry_after)
        if after is None:
            known = _EXPORT_CONSTANTS.get(value)
            if known is not None:
                return known
        elif value != "retry":
            raise ValueError("only a RETRY result carries retry_after")
        result = object.__new__(cls)
        object.__setattr__(result, "_value", value)
        object.__setattr__(result, "_retry_after", after)
        return result

    @classmethod
    def retry(cls, after: float | None = None) -> ExportResult:
        """A RETRY result; ``after``: the seconds the host asked us to wait (its
        ``Retry-After``), ignored unless positive and finite. Without one it is
        :attr:`RETRY` itself."""
        return cls("retry", after)

    @property
    def value(self) -> str:
        """The kind: ``"success"``, ``"retry"``, ``"drop"`` or ``"split"``."""
        return self._value

    @property
    def name(self) -> str:
        """The kind's constant name: ``"SUCCESS"``, ``"RETRY"``, ``"DROP"`` or ``"SPLIT"``."""
        return self._value.upper()

    @property
    def retry_after(self) -> float | None:
        """Seconds the host asked us to wait before trying again (RETRY only), or None."""
        return self._retry_after

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ExportResult is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"ExportResult is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExportResult):
            return NotImplemented
        return self._value == other._value

    def __hash__(self) -> int:
        return hash((ExportResult, self._value))

    def __repr__(self) -> str:
        if self._retry_after is not None:
            return f"ExportResult.retry(after={self._retry_after!r})"
        return f"ExportResult.{self.name}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ExportResult, (self._value, self._retry_after))


_EXPORT_KINDS = ("success", "retry", "drop", "split")
_EXPORT_CONSTANTS: dict[str, ExportResult] = {}


def _positive_seconds(value: float | None) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and seconds > 0 else None


for _kind in _EXPORT_KINDS:
    _EXPORT_CONSTANTS[_kind] = ExportResult(_kind)
    setattr(ExportResult, _kind.upper(), _EXPORT_CONSTANTS[_kind])
del _kind


@runtime_checkable
class Sink(Protocol):
    """One destination for finished, scrubbed batches. Knows nothing of consent or privacy."""

    def export(self, batch: Sequence[Event]) -> ExportResult:
        """Deliver a batch; never raise for delivery problems: return RETRY (or
        ``ExportResult.retry(after)`` with the host's Retry-After), DROP or SPLIT."""
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
