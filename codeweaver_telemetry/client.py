# SPDX-License-Identifier: MIT OR Apache-2.0
"""TelemetryClient: the one place that wires gate -> snapshot -> queue -> pipeline -> sink.

On the caller's thread, ``capture`` does only three things: the consent gate (one attribute
read), a snapshot of the caller's data (later mutation of the caller's objects cannot change
what is sent, and the caller's objects are never modified, except that ``capture_error``
marks the exception object it captured), and a non-blocking enqueue. All
privacy work happens on the worker thread. Every public method swallows its own errors:
nothing raises into the host program.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import datetime as dt
import decimal
import enum
import itertools
import logging
import secrets
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import PurePath
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from codeweaver_telemetry._instruments import ErrorCapture, Timer
from codeweaver_telemetry._internal import (
    in_forked_child,
    internal_error,
    internal_errors,
    logger,
)
from codeweaver_telemetry._types import (
    ERROR_EVENT,
    FLAG_CALLED_EVENT,
    HEARTBEAT_EVENT,
    SEARCH_EVENT,
    SESSION_EVENT,
    Event,
    SessionMetadata,
    Sink,
)
from codeweaver_telemetry.consent import (
    ConsentDecision,
    consent_sources,
    decide,
    environment_decision,
)
from codeweaver_telemetry.state import ConsentWatch, StateError, StateStore

# Everything below is imported only once telemetry is on: a client that is off costs no
# pydantic, no settings parsing, no regex compilation and no posthog.
if TYPE_CHECKING:
    from codeweaver_telemetry._heartbeat import Heartbeat
    from codeweaver_telemetry._worker import Worker
    from codeweaver_telemetry.events.schemas import SessionEvent
    from codeweaver_telemetry.events.stats import SessionStatistics
    from codeweaver_telemetry.flags import FlagCache, FlagValue
    from codeweaver_telemetry.settings import TelemetrySettings

__all__ = ["PostHogEventLike", "TelemetryClient", "get_telemetry_client"]

_ERROR_EVENTS_PER_FINGERPRINT = 5  # per session; later repeats are only counted
_ERROR_FINGERPRINTS = 100  # distinct errors sent as events per session
_FLAGS_CALLED_MAX = 1000  # distinct (flag, value) exposures sent per session
_CAPTURED_MARK = "_codeweaver_telemetry_fingerprint"

_IMMUTABLE_TYPES = frozenset({str, int, float, bool, type(None), bytes})
_IMMUTABLE = (
    str,
    int,
    float,
    bytes,
    enum.Enum,
    dt.date,
    dt.time,
    dt.timedelta,
    uuid.UUID,
    decimal.Decimal,
    PurePath,
)
_SNAPSHOT_DEPTH = 32


class PostHogEventLike(Protocol):
    """Anything with ``to_posthog_event() -> (event name, properties)``."""

    def to_posthog_event(self) -> tuple[str, dict[str, Any]]:
        """Return the event name and its properties."""
        ...


def _snapshot(value: Any, depth: int = 0) -> Any:
    """Copy containers so later mutation by the caller cannot change what is sent."""
    t = type(value)
    if t in _IMMUTABLE_TYPES or isinstance(value, _IMMUTABLE):
        return value
    if depth >= _SNAPSHOT_DEPTH:
        return "<max_depth>"
    if t is dict or isinstance(value, Mapping):
        return {k: _snapshot(v, depth + 1) for k, v in value.items()}
    if t is list:
        return [_snapshot(v, depth + 1) for v in value]
    if t is tuple:
        return tuple(_snapshot(v, depth + 1) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    try:
        return copy.deepcopy(value)
    except Exception:  # what cannot be copied is serialized now (rules and scrubber apply)
        from codeweaver_telemetry.privacy.rules import serialize_for_telemetry

        try:
            wrapped = serialize_for_telemetry({"v": value})
        except Exception:
            wrapped = {}
        if "v" in wrapped:
            return wrapped["v"]
        return UncopyableValue()  # no JSON-safe form either: it is not sent


def _metadata_snapshot(metadata: object) -> dict[str, Any]:
    """A snapshot of session metadata; what cannot be used is left out (one warning).

    The session starts whatever the metadata is: a list, a number, a string or a mapping
    that fails while it is read costs the metadata, never the session.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        logger.warning(
            "codeweaver_telemetry: session metadata must be a mapping, not %s; it was ignored",
            type(metadata).__name__,
        )
        return {}
    snapshot: dict[Any, Any] = {}
    failed: Exception | None = None
    try:
        for key, value in metadata.items():
            try:
                snapshot[key] = _snapshot(value)
            except Exception as exc:  # this value only
                failed = exc
    except Exception as exc:  # iterating the mapping itself failed: keep what was read
        failed = exc
    if failed is not None:
        logger.warning(
            "codeweaver_telemetry: session metadata could not be read whole (%s); what "
            "could not be read was ignored",
            type(failed).__name__,
        )
    return snapshot


class UncopyableValue:
    """Stands in for a caller's object that could not be snapshotted; never sent."""

    __slots__ = ()


# Event uuids (version 4 layout): 74 random bits drawn once per process, then a counter
# from a random start in the last 48 bits. Unique, not secret, and cheap on the caller's
# thread (about a twelfth of str(uuid.uuid4())): only uniqueness matters to PostHog, which
# drops an event whose uuid it already has. Drawn from the OS, so an app's random.seed(42)
# cannot make two runs send the same uuids, and drawn again in a forked child.
_UUID_TEMPLATE = ""
_UUID_COUNTER: Iterator[int] = iter(())


def _renew_uuids() -> None:
    global _UUID_TEMPLATE, _UUID_COUNTER
    h = secrets.token_hex(10)
    variant = "89ab"[int(h[15], 16) & 3]
    _UUID_TEMPLATE = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{variant}{h[16:19]}-%012x"
    _UUID_COUNTER = itertools.count(secrets.randbelow(1 << 47))


def _uuid4() -> str:
    """A new event uuid."""
    return _UUID_TEMPLATE % (next(_UUID_COUNTER) & 0xFFFFFFFFFFFF)


_renew_uuids()
in_forked_child(_renew_uuids)


def _epoch(timestamp: object) -> float:
    """Seconds since the epoch for an aware datetime; the time now (and one warning) else."""
    if isinstance(timestamp, dt.datetime) and timestamp.utcoffset() is not None:
        try:
            return timestamp.timestamp()
        except (OverflowError, OSError, ValueError):
            pass
    what = (
        "a naive datetime (give one with a time zone, such as datetime.now(timezone.utc))"
        if isinstance(timestamp, dt.datetime)
        else f"a {type(timestamp).__name__}, not a timezone-aware datetime"
    )
    logger.warning(
        "codeweaver_telemetry: an event's timestamp was refused: %s; the capture time is used",
        what,
    )
    return time.time()


def _uuid7() -> str:
    """A UUID version 7 (time-ordered), the form PostHog expects for ``$session_id``."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | rand & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def _spool_tag(settings: TelemetrySettings, sink: Sink | None) -> str:
    """Where spooled events may go: this PostHog project, the local log, or this sink type."""
    if sink is not None:
        return "sink-" + type(sink).__name__.lower()
    if settings.posthog_api_key is None:
        return "local"
    import hashlib

    destination = f"{settings.posthog_host}\0{settings.posthog_api_key.get_secret_value()}"
    return hashlib.sha256(destination.encode("utf-8")).hexdigest()[:16]


_PENDING_SEARCH: Any = None


def _pending_search_class() -> Any:
    """``PendingSearch``, imported on first use, then kept (a light module: the event
    itself, with pydantic and the scrubber, is built on the worker)."""
    global _PENDING_SEARCH
    if _PENDING_SEARCH is None:
        from codeweaver_telemetry.events._gather import PendingSearch

        _PENDING_SEARCH = PendingSearch
    return _PENDING_SEARCH


def _prepare_worker() -> None:
    """What the worker thread imports, done at once when it starts (under the lock that
    ``os.fork()`` waits for): a child forked at any moment inherits whole modules."""
    from codeweaver_telemetry import pipeline
    from codeweaver_telemetry.events import schemas  # noqa: F401  (Deferred events build here)

    pipeline.run(Event(name="warm_up", properties={"k": "v"}, timestamp=0.0, uuid="-"))


def _run_pipeline(event: Event, on_drop: Callable[[str], None]) -> Event | None:
    # Imported here, on the worker thread: the caller never pays for the privacy modules
    # (pydantic models, the scrubber's regex compilation).
    from codeweaver_telemetry import pipeline

    return pipeline.run(event, on_drop=on_drop)


class _Session:
    __slots__ = ("errors_sent", "flags_called", "id", "started", "stats")

    def __init__(self) -> None:
        from codeweaver_telemetry.events.stats import SessionStatistics

        self.id = _uuid7()
        self.started = time.monotonic()
        self.stats = SessionStatistics()
        self.errors_sent: dict[str, int] = {}
        self.flags_called: set[tuple[str, FlagValue]] = set()


class _Off:
    """What an instrument of a client that is off resolves to."""

    enabled = False


def _off() -> Any:
    return _Off


_OFF_TIMER = Timer(_off, "")
_OFF_ERRORS = ErrorCapture(_off)


class TelemetryClient:
    """Product telemetry for one process: consent, sessions, events, flags.

    Prefer :func:`get_telemetry_client` for the process-wide client. Construct one directly
    (``TelemetryClient(settings)``, :meth:`from_settings`) for tests or special set-ups.

    Args:
        settings: the settings; default: loaded from code, environment and config file.
        sink: where finished events go; default: PostHog when an API key is set, else the
            local JSON Lines log in the state directory.
        config_error: a settings problem found while loading (telemetry is then off).
        on_notice: shows the one-time notice to the user under the opt-out policy (for
            example ``lambda text: print(text, file=sys.stderr)``). Without it the opt-out
            policy cannot show its notice, so telemetry stays off.
    """

    def __init__(
        self,
        settings: TelemetrySettings | None = None,
        *,
        sink: Sink | None = None,
        config_error: str | None = None,
        on_notice: Callable[[str], None] | None = None,
        _force_consent: ConsentDecision | None = None,
    ) -> None:
        self._enabled = False
        self._closed = False
        self._lock = threading.RLock()
        self._session: _Session | None = None
        self._context: Mapping[str, Any] = {}
        self._metadata: SessionMetadata | None = None
        self._flags_seen: dict[str, FlagValue] = {}
        self._worker: Worker | None = None
        self._flag_cache: FlagCache | None = None
        self._flag_source: Any = None
        self._distinct_id = ""
        self._exit_timeout = 1.0
        self._waited_s = 0.0  # time spent in flushes that timed out since the last success
        self._sent_at_wait = 0  # the worker's sent count at the last flush that timed out
        self._key_provider: Any = None
        self._hasher: Callable[[object], str] | None = None
        self._errors_sent: dict[str, int] = {}  # error events per fingerprint, no session
        self._flags_called: set[tuple[str, FlagValue]] = set()  # exposures sent, no session
        self._flag_events = True  # send $feature_flag_called when the app reads a flag
        self._heartbeat: Heartbeat | None = None
        self._started_at = time.monotonic()
        self._settings = settings
        self.decision = ConsentDecision(False, "init", "not initialised")
        """Whether telemetry is on, which source decided, and why."""
        with internal_errors("client start"):
            quick = None if _force_consent else environment_decision()
            if quick is not None:  # off whatever the settings say: do not even load them
                self.decision = quick
                logger.debug("codeweaver_telemetry: telemetry is off (%s)", quick.reason)
                return
        if self.decision.source != "init":
            return
        if settings is None:
            # Outside the guard on purpose: load_settings never raises, except in strict
            # mode, where the developer asked for the TelemetryConfigError.
            from codeweaver_telemetry.settings import load_settings

            settings, config_error = load_settings()
            self._settings = settings
        with internal_errors("client start"):
            self._start(settings, sink, config_error, on_notice, _force_consent)

    @property
    def settings(self) -> TelemetrySettings:
        """The settings in use (loaded on first access when telemetry was off at once)."""
        if self._settings is None:
            from codeweaver_telemetry.settings import load_settings

            self._settings = load_settings()[0]
        return self._settings

    @classmethod
    def from_settings(
        cls, settings: TelemetrySettings, *, sink: Sink | None = None
    ) -> TelemetryClient:
        """Build a client from explicit settings."""
        return cls(settings, sink=sink)

    @classmethod
    def from_options(
        cls,
        *,
        sink: Sink | None = None,
        on_notice: Callable[[str], None] | None = None,
        **options: Any,
    ) -> TelemetryClient:
        """Build a client from setting values given in code, over environment and file.

        Unlike ``TelemetrySettings(...)``, a bad value never raises (outside strict mode):
        it is logged once and telemetry stays off, as for the environment.

        Example: ``TelemetryClient.from_options(enabled=True, posthog_api_key="phc_...")``.
        """
        from codeweaver_telemetry.settings import load_settings

        settings, error = load_settings(**options)
        return cls(settings, sink=sink, config_error=error, on_notice=on_notice)

    def _start(
        self,
        settings: TelemetrySettings,
        sink: Sink | None,
        config_error: str | None,
        on_notice: Callable[[str], None] | None,
        forced: ConsentDecision | None,
    ) -> None:
        store = StateStore(settings.resolved_state_dir)
        self.decision = forced or decide(
            consent_sources(settings, store, config_error=config_error, on_notice=on_notice)
        )
        if not self.decision.allowed:
            # A broken state file is a problem the user should hear about (once); every
            # other "off" is a choice, logged quietly.
            level = logging.WARNING if self.decision.source == "state_error" else logging.DEBUG
            logger.log(
                level,
                "codeweaver_telemetry: telemetry is off (%s: %s)",
                self.decision.source,
                self.decision.reason,
            )
            return
        try:
            install_id, key = store.ensure_identity()
        except (OSError, StateError) as exc:
            self.decision = ConsentDecision(
                False, "state_error", f"the state directory is not writable ({exc})"
            )
            logger.warning("codeweaver_telemetry: %s; telemetry is off", self.decision.reason)
            return
        from codeweaver_telemetry._worker import Worker
        from codeweaver_telemetry.flags import FlagCache
        from codeweaver_telemetry.privacy.hashing import (
            InMemoryKeyProvider,
            set_default_key_provider,
        )

        self._distinct_id = install_id
        self._exit_timeout = settings.exit_timeout_seconds
        self._flag_events = settings.send_feature_flag_events
        # This client's events hash under this install's key, whatever other clients do.
        self._key_provider = InMemoryKeyProvider(key)
        if forced is None:  # direct serialize_for_telemetry() calls use the install key too
            set_default_key_provider(self._key_provider)
        self._refresh_context()
        given_sink = sink
        if sink is None:
            sink = self._default_sink(settings)
        from codeweaver_telemetry._spool import SPOOL_DIR, Spool

        self._worker = Worker(
            sink=sink,
            process=_run_pipeline,
            batch_size=settings.batch_size,
            interval_s=settings.batch_interval_seconds,
            max_queue=settings.max_queue_size,
            spool=(
                Spool(settings.resolved_state_dir / SPOOL_DIR, tag=_spool_tag(settings, given_sink))
                if forced is None
                else None
            ),
            max_retries=settings.max_retries,
            # The stored choice is asked again before every send and spool write.
            gate=ConsentWatch(store, install_id),
            install_id=install_id,
            prepare=_prepare_worker,
            on_revoked=self._revoked,
        )
        if settings.posthog_api_key is not None:
            from codeweaver_telemetry.sinks.posthog import PostHogFlags

            personal = settings.posthog_personal_api_key
            self._flag_source = PostHogFlags(
                api_key=settings.posthog_api_key.get_secret_value(),
                host=settings.posthog_host,
                distinct_id=install_id,
                timeout_s=settings.request_timeout_seconds,
                personal_api_key=personal.get_secret_value() if personal else None,
            )
            self._flag_cache = FlagCache(
                self._flag_source,
                budget_s=settings.flag_timeout_seconds,
                refresh_s=settings.flag_refresh_seconds,
            )
        self._enabled = True
        _LIVE.add(self)
        _register_atexit()
        if settings.heartbeat_interval_seconds is not None:
            self._start_heartbeat(settings.heartbeat_interval_seconds)
        self._worker.start_draining()  # what earlier runs could not send goes out now

    def _revoked(self) -> None:
        """The worker found the stored choice changed: this client is off from now on."""
        self._enabled = False
        self.decision = ConsentDecision(
            False,
            "stored_choice",
            "turned off while running (disabled, deleted, or a new install id)",
        )
        if self._heartbeat is not None:
            self._heartbeat.stop(timeout_s=0)

    def _default_sink(self, settings: TelemetrySettings) -> Sink:
        from codeweaver_telemetry.sinks.jsonl import LocalJSONLSink

        log = LocalJSONLSink(settings.resolved_state_dir)
        if settings.posthog_api_key is None:
            return log
        from codeweaver_telemetry.sinks.posthog import PostHogSink

        remote = PostHogSink(
            api_key=settings.posthog_api_key.get_secret_value(),
            host=settings.posthog_host,
            timeout_s=settings.request_timeout_seconds,
        )
        return _AuditedSink(remote, log) if settings.audit_log else remote

    # -- state ----------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True when events are collected and sent."""
        return self._enabled

    @property
    def distinct_id(self) -> str | None:
        """The anonymous install id (None when telemetry is off)."""
        return self._distinct_id or None

    @property
    def session_id(self) -> str | None:
        """The current session's id, or None outside a session."""
        session = self._session
        return session.id if session else None

    def stats(self) -> dict[str, Any]:
        """Counters: events sent, dropped by reason, pending."""
        worker = self._worker
        if worker is None:
            return {"sent": 0, "dropped": {}, "pending": 0, "spooled": 0}
        return {
            "sent": worker.sent,
            "dropped": dict(worker.dropped),
            "pending": worker.pending,
            "spooled": worker.spooled,
        }

    # -- sessions -------------------------------------------------------------------------
    def start_session(self, metadata: Mapping[str, Any] | None = None) -> str | None:
        """Start a session (idempotent) and return its id; None when telemetry is off.

        ``metadata`` is snapshotted now, goes through the privacy pipeline once (on the
        worker thread), and is attached to every event of the session. Feature flags are
        fetched in the background.
        """
        if not self._enabled:
            return None
        with internal_errors("start_session"), self._lock:
            if self._session is None:
                self._metadata = SessionMetadata(_metadata_snapshot(metadata))
                self._session = _Session()
                self._flags_seen = {}
                self._refresh_context()
                if self._flag_cache is not None:
                    self._flag_cache.prefetch(force=True)  # once per session
            return self._session.id
        return None

    def end_session(self) -> None:
        """End the session: queue its session event (once) and ask for it to be sent now.

        It never waits for delivery (use :meth:`flush` for that): the program's one wait
        on the network is at exit, within the exit bound. Leaving a ``with`` block and
        :meth:`shutdown` end the session too; whichever comes first sends the event, the
        others find no session. Outside a session this does nothing.
        """
        if not self._enabled:
            return
        with internal_errors("end_session"):
            worker = self._worker
            if self._end_session() and worker is not None:
                worker.request_flush()

    def _end_session(
        self,
        overrides: Mapping[str, Any] | None = None,
        stats: SessionStatistics | None = None,
    ) -> bool:
        with self._lock:
            session = self._session
            if session is None:
                return False
            try:
                event: object = self._session_event(session, overrides, stats)
                properties = None
            except Exception:  # the session still ends, and its duration still goes out
                logger.warning("codeweaver_telemetry: the session statistics could not be read")
                event = None
                properties = {"duration_seconds": round(time.monotonic() - session.started, 3)}
            self._enqueue(SESSION_EVENT, properties, event, reserved=True, owned=True)
            self._session = None
            self._metadata = None
            self._flags_seen = {}
            self._refresh_context()
            return True

    @staticmethod
    def _session_event(
        session: _Session | None,
        overrides: Mapping[str, Any] | None,
        stats: SessionStatistics | None,
    ) -> SessionEvent:
        from codeweaver_telemetry.events.schemas import SessionEvent

        options = dict(overrides or {})
        duration = options.pop("duration_seconds", None)
        if duration is None and session is not None:
            duration = time.monotonic() - session.started
        source = stats if stats is not None else (session.stats if session else None)
        snapshot = source.snapshot() if source is not None else {}
        if stats is not None:  # the caller's object: what it returns may stay shared with it
            snapshot = _snapshot(snapshot)
        return SessionEvent.from_snapshot(snapshot, duration_seconds=duration, **options)

    @property
    def statistics(self) -> SessionStatistics | None:
        """The current session's :class:`SessionStatistics`; None when off or outside one.

        The ``record_*`` methods of the client write to it and do nothing when there is no
        session, so apps rarely need it directly.
        """
        session = self._session
        return session.stats if session is not None and self._enabled else None

    def preview(self) -> dict[str, Any] | None:
        """The session event exactly as the pipeline would send it now, without sending it.

        Returns the finished payload (``event``, ``distinct_id``, ``timestamp``, ``uuid``,
        ``properties``). The event sent when the session ends differs in ``uuid``,
        ``timestamp`` and ``duration_seconds``, and in whatever is recorded meanwhile.
        None when telemetry is off, outside a session, or if the pipeline would drop the
        event.
        """
        if not self._enabled:
            return None
        with internal_errors("preview"):
            with self._lock:
                session = self._session
                if session is None:
                    return None
                event = self._session_event(session, None, None)
                context = self._context
            from codeweaver_telemetry import pipeline
            from codeweaver_telemetry.sinks.memory import to_payload

            done = pipeline.run(
                Event(
                    name=SESSION_EVENT,
                    properties={},
                    timestamp=time.time(),
                    uuid="",
                    distinct_id=self._distinct_id,
                    model=event,
                    context=context,
                )
            )
            return to_payload(done) if done is not None else None
        return None

    def _refresh_context(self) -> None:
        # Copy-on-write: events already queued keep the context they were captured with.
        session = self._session
        context: dict[str, Any] = {"key_provider": self._key_provider}
        if session is not None:
            context.update(
                session_id=session.id, metadata=self._metadata, flags=dict(self._flags_seen)
            )
        self._context = context

    # -- capture --------------------------------------------------------------------------
    def capture(
        self,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: dt.datetime | None = None,
    ) -> str | None:
        """Queue an event; its properties go through the privacy pipeline in the background.

        Args:
            event: the event's name.
            properties: its properties (snapshotted now; your dict is never modified).
            timestamp: when it happened, as a timezone-aware datetime (sent in UTC);
                default: now. A naive datetime is refused with a warning, and the capture
                time is used instead.

        Returns:
            The event's uuid (PostHog deduplicates on it), or None when telemetry is off
            or the event was not queued.

        .. versionchanged:: 0.1.0 ``timestamp`` and the returned uuid.
        """
        if not self._enabled:
            return None
        with internal_errors("capture"):
            return self._enqueue(event, properties, None, timestamp=timestamp, with_uuid=True)
        return None

    def capture_from_event(
        self, obj: PostHogEventLike, *, timestamp: dt.datetime | None = None
    ) -> str | None:
        """Capture any object with ``to_posthog_event() -> (name, properties)``.

        Models among the properties keep their own privacy rules. ``timestamp`` and the
        returned uuid are as for :meth:`capture`.
        """
        if not self._enabled:
            return None
        with internal_errors("capture_from_event"):
            schemas = sys.modules.get("codeweaver_telemetry.events.schemas")
            if schemas is not None and isinstance(obj, schemas.ShippedEvent):
                # Serialized on the worker, hashing under this client's key.
                return self._enqueue(obj.EVENT_NAME, None, obj, timestamp=timestamp, with_uuid=True)
            name, properties = obj.to_posthog_event()
            return self._enqueue(name, properties, None, timestamp=timestamp, with_uuid=True)
        return None

    def capture_with_serialization(
        self, event: str, model: object, *, timestamp: dt.datetime | None = None
    ) -> str | None:
        """Capture ``model``'s ``serialize_for_telemetry()`` output as the properties.

        ``timestamp`` and the returned uuid are as for :meth:`capture`.
        """
        if not self._enabled:
            return None
        with internal_errors("capture_with_serialization"):
            return self._enqueue(event, None, model, timestamp=timestamp, with_uuid=True)
        return None

    # -- shipped events -----------------------------------------------------------------------
    def capture_search_event(
        self,
        response: object,
        query: str | None = None,
        intent_type: object = None,
        strategies: Iterable[object] = (),
        execution_time_ms: float | None = None,
        *,
        tools_over_privacy: bool | None = None,
        feature_flags: Mapping[str, FlagValue] | None = None,
    ) -> None:
        """Send a ``codeweaver_search`` event and record the search in the session.

        Args:
            response: a :class:`~codeweaver_telemetry.events.SearchResponseSummary`, or any
                object with its attributes; only counts, a score summary and distributions
                are read from it.
            query: the user's query; sent only as character and term counts, unless
                ``tools_over_privacy`` is on.
            intent_type: an :class:`~codeweaver_telemetry.events.IntentType`, the app's own
                ``str`` enum, or a string.
            strategies: :class:`~codeweaver_telemetry.events.SearchStrategy` members or
                strings.
            execution_time_ms: how long the search took.
            tools_over_privacy: add ``query.text`` (scrubbed, 200 characters at most) and
                ``query.hash`` (keyed HASH); None: the ``tools_over_privacy`` setting. When
                the user set ``tools_over_privacy = false`` explicitly (environment, config
                file or code), that wins over the argument.
            feature_flags: the flags this search ran under, as ``$feature/<key>``; None:
                the flags looked up in the session.
        """
        if not self._enabled:
            return
        try:  # (not the internal_errors context manager: this path is hot)
            # Only attribute reads here; the event is built on the worker.
            pending = _pending_search_class().gather(
                response,
                query=query,
                intent_type=intent_type,
                strategies=strategies,
                execution_time_ms=execution_time_ms,
                tools_over_privacy=self._tools_over_privacy(tools_over_privacy),
            )
            with self._lock:  # so the search lands in the session its event names
                session = self._session
                if session is not None:
                    session.stats.record_search(
                        intent=pending.intent,
                        strategies=pending.strategies,
                        latency_ms=pending.elapsed,
                    )
                context = self._context
            if isinstance(feature_flags, Mapping):
                context = {**context, "flags": _snapshot(dict(feature_flags))}
            self._enqueue(SEARCH_EVENT, None, pending, owned=True, context=context)
        except Exception as exc:
            internal_error("capture_search_event", exc)

    def _tools_over_privacy(self, argument: bool | None) -> bool:
        """The argument, else the setting; a "no" the user set explicitly always wins."""
        settings = self.settings
        if "tools_over_privacy" in settings.model_fields_set and not settings.tools_over_privacy:
            return False
        return settings.tools_over_privacy if argument is None else argument is True

    def capture_session_event(
        self,
        stats: SessionStatistics | None = None,
        *,
        version: str | None = None,
        setup_success: bool | None = None,
        setup_attempts: int | None = None,
        config_errors: Iterable[object] = (),
        duration_seconds: float | None = None,
    ) -> None:
        """Send the ``codeweaver_session`` event now, with these facts over the recorded ones.

        In a session, this ends the session (its one session event is this one, so ending
        the session later sends nothing more). Outside a session it sends a session event
        built from ``stats`` alone, and nothing without ``stats``. It never waits for
        delivery.

        Args:
            stats: the statistics to send (default: the session's own).
            version: the app's version.
            setup_success: whether set-up succeeded (default: as recorded).
            setup_attempts: set-up attempts (default: as recorded).
            config_errors: exceptions, exception classes or kind names; counted by type
                name in ``setup.error_kinds``, never with their messages.
            duration_seconds: the session's length (default: measured).
        """
        if not self._enabled:
            return
        with internal_errors("capture_session_event"):
            overrides = {
                "version": version,
                "setup_success": setup_success,
                "setup_attempts": setup_attempts,
                "config_errors": config_errors,
                "duration_seconds": duration_seconds,
            }
            if not self._end_session(overrides, stats) and stats is not None:
                event = self._session_event(None, overrides, stats)
                self._enqueue(SESSION_EVENT, None, event, reserved=True, owned=True)

    # -- recording into the session -----------------------------------------------------------
    def _record(self, method: str, *args: Any) -> None:
        if self._session is None or not self._enabled:
            return
        # Under the client's lock: a record racing end_session lands in the session before
        # its event is built, or in no session, never in one whose event has gone.
        with internal_errors(method), self._lock:
            session = self._session
            if session is not None:
                getattr(session.stats, method)(*args)

    def record_request(self, ok: bool = True, latency_ms: float | None = None) -> None:
        """Count one request (and its latency) in the session; nothing outside a session."""
        self._record("record_request", ok, latency_ms)

    def record_tokens(self, generated: int = 0, delivered: int = 0, saved: int = 0) -> None:
        """Add token counts to the session."""
        self._record("record_tokens", generated, delivered, saved)

    def record_languages(self, languages: Iterable[str] | Mapping[str, int]) -> None:
        """Add languages (names, or name -> count) to the session's distribution."""
        self._record("record_languages", languages)

    def record_failover(self, seconds: float = 0.0) -> None:
        """Count one failover and the seconds it took."""
        self._record("record_failover", seconds)

    def record_setup(
        self, success: bool, attempts: int = 1, error_kinds: Iterable[object] = ()
    ) -> None:
        """Record the set-up outcome; error kinds are kept as type names, never messages."""
        self._record("record_setup", success, attempts, error_kinds)

    def record_usage(self, name: str, count: int = 1) -> None:
        """Count a use of a feature under ``name`` in the session's ``usage`` map."""
        self._record("record_usage", name, count)

    def record_timing(self, name: str, ms: float) -> None:
        """Record one duration (milliseconds) under ``name`` in the session's ``timings``."""
        self._record("record_timing", name, ms)

    def timer(self, name: str) -> Timer:
        """Time a block or function into the session's ``timings`` (never one event per call).

        ``with client.timer("index"): ...``, ``async with client.timer("index"): ...`` or
        ``@client.timer("index")`` on a sync or async function.
        """
        if not self._enabled:
            return _OFF_TIMER
        return Timer(self._self, name)

    def _self(self) -> TelemetryClient:
        return self

    # -- errors ---------------------------------------------------------------------------------
    def capture_error(
        self,
        exc: BaseException,
        *,
        handled: bool = True,
        include_message: bool = False,
        in_app: tuple[str, ...] | None = None,
    ) -> str | None:
        """Send a ``codeweaver_error`` event for ``exc`` and count it in the session.

        Sent: the exception's type (qualified for the app's own types), its in-app frames
        as ``module:function`` (no paths, no line text), a fingerprint (keyed HASH of type
        and frames) and ``handled``. The message only with ``include_message=True``, and
        then scrubbed and cut to 200 characters. Per session (and outside sessions), one
        fingerprint is sent as an event at most 5 times; later repeats are only counted.

        To count one exception object once however often it is captured (a capture block,
        then the excepthook), this sets a private attribute on it. Captured again in the
        same session it is not counted again, unless it was captured as handled and is now
        unhandled (the program did not recover after all).

        Args:
            exc: the exception.
            handled: False when the program did not recover from it.
            include_message: also send the (scrubbed) message.
            in_app: top-level package names whose frames count as the app's; default:
                frames outside the standard library and site-packages.

        Returns:
            The fingerprint (None when telemetry is off).
        """
        if not self._enabled:
            return None
        with internal_errors("capture_error"):
            from codeweaver_telemetry.events.errors import describe_exception
            from codeweaver_telemetry.events.schemas import ErrorEvent

            handled = bool(handled)
            session = self._session
            scope = session.id if session is not None else ""
            mark = getattr(exc, _CAPTURED_MARK, None)
            if (
                isinstance(mark, tuple)
                and len(mark) == 3
                and mark[0] == scope
                and (mark[2] == handled or not mark[2])
            ):  # this exception object was already captured in this session: one error
                return str(mark[1])
            described = describe_exception(exc, in_app=in_app)
            fingerprint = self._fingerprint(described.signature)
            with self._lock:  # the count and the event's $session_id name the same session
                session = self._session
                context = self._context
                sent = session.errors_sent if session is not None else self._errors_sent
                if session is not None:
                    session.stats.record_error(fingerprint)
                seen = sent.get(fingerprint, 0)
                known = seen > 0 or len(sent) < _ERROR_FINGERPRINTS
                send = known and seen < _ERROR_EVENTS_PER_FINGERPRINT
                if send:
                    sent[fingerprint] = seen + 1
            scope = session.id if session is not None else ""
            with contextlib.suppress(Exception):  # a capture block, then the excepthook
                setattr(exc, _CAPTURED_MARK, (scope, fingerprint, handled))
            if send:
                event = ErrorEvent(
                    type=described.type_name,
                    frames=described.frames,
                    fingerprint=fingerprint,
                    handled=handled,
                    cause_types=described.cause_types,
                    message=described.message if include_message else None,
                )
                self._enqueue(ERROR_EVENT, None, event, owned=True, context=context)
            return fingerprint
        return None

    def _fingerprint(self, signature: str) -> str:
        hasher = self._hasher
        if hasher is None:
            from codeweaver_telemetry.privacy.hashing import KeyedHasher

            hasher = self._hasher = KeyedHasher.for_key(self._key_provider.key())
        return hasher(signature)

    def capture_exceptions(
        self, *, include_message: bool = False, in_app: tuple[str, ...] | None = None
    ) -> ErrorCapture:
        """A context manager and decorator that captures an exception, then re-raises it.

        ``with client.capture_exceptions(): ...`` or ``@client.capture_exceptions()`` (sync
        or async). The exception is sent as unhandled; see :meth:`capture_error`.
        """
        if not self._enabled:
            return _OFF_ERRORS
        return ErrorCapture(self._self, include_message=include_message, in_app=in_app)

    # -- heartbeat ------------------------------------------------------------------------------
    def _start_heartbeat(self, interval_s: float) -> None:
        from codeweaver_telemetry._heartbeat import Heartbeat

        def failing() -> bool:
            worker = self._worker
            return worker is not None and worker.consecutive_failures > 0

        self._heartbeat = Heartbeat(interval_s, self._beat, failing)
        self._heartbeat.start()

    def _beat(self, number: int) -> None:
        from codeweaver_telemetry.events.schemas import HeartbeatEvent

        now = time.monotonic()
        session = self._session
        event = HeartbeatEvent(
            uptime_seconds=round(now - self._started_at, 3),
            beat=number,
            session_seconds=round(now - session.started, 3) if session else None,
            counters=session.stats.counters() if session else None,
        )
        self._enqueue(HEARTBEAT_EVENT, None, event, owned=True)

    def _enqueue(
        self,
        name: str,
        properties: Mapping[str, Any] | None,
        model: object,
        *,
        reserved: bool = False,
        owned: bool = False,
        context: Mapping[str, Any] | None = None,
        timestamp: object = None,
        with_uuid: bool = False,
    ) -> str | None:
        worker = self._worker
        if worker is None or self._closed:
            return None
        if not isinstance(name, str):
            logger.warning(
                "codeweaver_telemetry: an event name must be a str, not %s; event dropped",
                type(name).__name__,
            )
            return None
        event_uuid = _uuid4() if with_uuid else ""  # else assigned by the pipeline
        queued = worker.submit(
            Event(
                name=name,
                properties=_snapshot(properties) if properties else {},
                timestamp=time.time() if timestamp is None else _epoch(timestamp),
                uuid=event_uuid,
                distinct_id=self._distinct_id,
                # The library's own events are built fresh and never shared: no copy.
                model=model if owned or model is None else _snapshot(model),
                context=self._context if context is None else context,
            ),
            reserved=reserved,
        )
        return event_uuid if queued and event_uuid else None

    # -- flags ----------------------------------------------------------------------------
    def get_feature_flag(self, key: str, default: FlagValue | None = None) -> FlagValue | None:
        """The flag's value for this install, or ``default`` (never raises, bounded wait)."""
        cache = self._flag_cache
        if not self._enabled or cache is None:
            return default
        with internal_errors("get_feature_flag"):
            value = cache.get(key)
            if value is None:
                return default
            self._note_flags({key: value})
            self._flag_called(key, value)
            return value
        return default

    def get_all_feature_flags(self) -> dict[str, FlagValue]:
        """Every flag's value for this install; empty when unknown (never raises)."""
        cache = self._flag_cache
        if not self._enabled or cache is None:
            return {}
        with internal_errors("get_all_feature_flags"):
            values = cache.all()
            self._note_flags(values)
            return values
        return {}

    def _flag_called(self, key: str, value: FlagValue) -> None:
        """Send ``$feature_flag_called`` once per flag and value per session (outside
        sessions: per client), as PostHog experiments count exposures from it."""
        if not self._flag_events or not isinstance(key, str):
            return
        with self._lock:
            session = self._session
            called = session.flags_called if session is not None else self._flags_called
            if (key, value) in called or len(called) >= _FLAGS_CALLED_MAX:
                return
            called.add((key, value))
            context = {**self._context, "flag_called": (key, value)}
        self._enqueue(FLAG_CALLED_EVENT, None, None, context=context)

    def refresh_feature_flags(self) -> None:
        """Fetch this install's flags again now, in the background; never waits.

        For an app that must see a flag change within a session: lookups keep answering
        from the cache and see the new values once they arrive. (Flags are otherwise
        fetched when each session starts and after ``FLAG_REFRESH_SECONDS``.)
        """
        cache = self._flag_cache
        if not self._enabled or cache is None:
            return
        with internal_errors("refresh_feature_flags"):
            cache.refresh()

    def _note_flags(self, values: Mapping[str, FlagValue]) -> None:
        if self._session is None:
            return
        with self._lock:
            if any(self._flags_seen.get(k) != v for k, v in values.items()):
                self._flags_seen.update(values)
                self._refresh_context()

    # -- delivery -------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued; wait at most ``timeout`` (default: the exit bound)."""
        worker = self._worker
        if worker is None:
            return True
        with internal_errors("flush"):
            return self._flush(worker, self._exit_timeout if timeout is None else timeout)
        return False

    def _flush(self, worker: Worker, timeout: float) -> bool:
        started = time.monotonic()
        delivered = worker.flush(timeout)
        if delivered:
            self._waited_s = 0.0
        else:
            self._waited_s += time.monotonic() - started
            self._sent_at_wait = worker.sent
        return delivered

    def _exit_budget(self) -> float:
        """What is left of the exit bound after flushes that timed out.

        Once the worker has delivered anything since, the host is answering again and the
        whole bound is available.
        """
        worker = self._worker
        if worker is not None and worker.sent > self._sent_at_wait:
            self._waited_s = 0.0
        return max(0.0, self._exit_timeout - self._waited_s)

    def shutdown(self, timeout: float | None = None) -> None:
        """End the session, flush within ``timeout`` (default: the exit bound), stop.

        Idempotent; afterwards every method is a quiet no-op. When earlier flushes already
        waited on an unresponsive host, the default wait is what is left of the exit bound,
        so a program never waits more than the bound in all at its end.
        """
        if self._closed:
            return
        started = time.monotonic()  # the bound counts from here, session event included
        with internal_errors("shutdown"):
            if self._heartbeat is not None:
                self._heartbeat.stop(timeout_s=0)  # a daemon: no wait out of the exit bound
            self._end_session()
            self._closed = True
            self._enabled = False
            # Writing the spool is local and quick: it keeps a small share even when the
            # bound was used up by earlier flushes.
            left = max(self._exit_budget(), min(0.2, self._exit_timeout / 4))
            bound = left if timeout is None else timeout
            if self._worker is not None:
                self._worker.shutdown(max(0.0, bound - (time.monotonic() - started)))
            if self._flag_source is not None:
                self._flag_source.shutdown()
            _LIVE.discard(self)

    # -- context managers -------------------------------------------------------------------
    def __enter__(self) -> TelemetryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        worker = self._worker
        if self._enabled and worker is not None:
            with internal_errors("__exit__"):
                self._end_session()
                self._flush(worker, self._exit_budget())  # one flush, within one bound

    async def __aenter__(self) -> TelemetryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import asyncio

        # The flush waits on a thread; keep the event loop free while it does.
        await asyncio.to_thread(self.__exit__, exc_type, exc, tb)

    def __repr__(self) -> str:
        state = "enabled" if self._enabled else f"off ({self.decision.source})"
        return f"<TelemetryClient {state}>"


class _AuditedSink:
    """Deliver to ``remote``; record in the local log what it accepted."""

    def __init__(self, remote: Sink, log: Sink) -> None:
        self._remote = remote
        self._log = log

    def export(self, batch: Any) -> Any:
        from codeweaver_telemetry._types import ExportResult

        result = self._remote.export(batch)
        if result is ExportResult.SUCCESS:
            with internal_errors("audit log"):
                self._log.export(batch)
        return result

    def shutdown(self, timeout_s: float) -> None:
        self._remote.shutdown(timeout_s)
        self._log.shutdown(0)

    def prepare(self) -> None:
        """The remote's imports, done when the worker thread starts."""
        prepare = getattr(self._remote, "prepare", None)
        if callable(prepare):
            prepare()

    @property
    def retry_after_s(self) -> float:
        """The remote's Retry-After, for the worker's back-off."""
        return float(getattr(self._remote, "retry_after_s", 0.0) or 0.0)


# -- the process-wide client and exit ---------------------------------------------------------
_LIVE: weakref.WeakSet[TelemetryClient] = weakref.WeakSet()
_CLIENT: TelemetryClient | None = None
_CLIENT_LOCK = threading.Lock()
_BUILDING = threading.local()
_ATEXIT_REGISTERED = False


def get_telemetry_client(*, on_notice: Callable[[str], None] | None = None) -> TelemetryClient:
    """The process-wide client, created on first call from the environment and config file.

    Args:
        on_notice: shows the one-time notice to the user (for example ``print`` to stderr)
            under the opt-out policy. Only the first call's value is used. Without it, the
            opt-out policy cannot show its notice, so telemetry stays off.
    """
    global _CLIENT
    client = _CLIENT
    if client is not None:
        return client
    if getattr(_BUILDING, "active", False):
        # Called again while the client is being built (say, from on_notice): answer with
        # an off client rather than wait on ourselves.
        return TelemetryClient(_force_consent=ConsentDecision(False, "init", "still starting"))
    with _CLIENT_LOCK:
        if _CLIENT is None:
            _BUILDING.active = True
            try:
                _CLIENT = TelemetryClient(on_notice=on_notice)
            finally:
                _BUILDING.active = False
        return _CLIENT


def _reset_for_tests() -> None:
    """Shut the process-wide client down (quickly) and forget it."""
    global _CLIENT
    with _CLIENT_LOCK:
        client, _CLIENT = _CLIENT, None
    if client is not None:
        client.shutdown(timeout=0.5)


def _exit_hook() -> None:
    clients = list(_LIVE)
    if not clients:
        return
    reserve = min(0.2, max(c._exit_timeout for c in clients) / 4)  # for the spool
    bound = max([reserve, *(c._exit_budget() for c in clients)])
    deadline = time.monotonic() + bound
    for client in clients:  # one shared deadline: exit never waits longer than the bound
        with internal_errors("exit"):
            client.shutdown(timeout=max(0.0, deadline - time.monotonic()))


def _after_fork_in_child() -> None:
    """In a forked child: fresh locks, and no share in the parent's session.

    The child's events still go out (its worker restarts on its own), but it must not end
    the parent's session (one session event per session) nor wait on the parent's work.
    """
    global _CLIENT_LOCK
    _CLIENT_LOCK = threading.Lock()
    for client in list(_LIVE):
        client._lock = threading.RLock()
        client._session = None
        client._metadata = None
        client._flags_seen = {}
        client._flags_called = set()
        client._waited_s = 0.0
        client._refresh_context()
        if client._flag_cache is not None:  # its fetch thread is the parent's
            client._flag_cache._after_fork()
        if client._flag_source is not None:
            client._flag_source._after_fork()


in_forked_child(_after_fork_in_child)


def _register_atexit() -> None:
    global _ATEXIT_REGISTERED
    if not _ATEXIT_REGISTERED:
        _ATEXIT_REGISTERED = True
        atexit.register(_exit_hook)
        _register_child_exit()


def _register_child_exit() -> None:
    # A multiprocessing child ends with os._exit(), so atexit never runs there; its
    # finalizers do. Register the exit flush as one, here and in every forked child.
    import multiprocessing.util as mp_util

    def register(_: object = None) -> None:
        mp_util.Finalize(None, _exit_hook, exitpriority=10)

    register()
    mp_util.register_after_fork(_exit_hook, register)
