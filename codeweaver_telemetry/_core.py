# SPDX-License-Identifier: MIT OR Apache-2.0
"""What a client does when it is on (:class:`Running`), and when it is off (:data:`OFF`).

The client (``client.py``) is a façade over one of these. ``OFF`` is a null object: every
method answers what "off" means (None, nothing, an empty dict) without a check, so the
façade holds no ``if enabled`` guards. ``Running`` is built by ``_startup.start`` once
consent, identity and wiring succeeded.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from codeweaver_telemetry._instruments import ErrorCapture, Recorder, Timer
from codeweaver_telemetry._internal import internal_error, internal_errors, logger
from codeweaver_telemetry._process import PROCESS, spool_reserve
from codeweaver_telemetry._session import Session, session_event
from codeweaver_telemetry._snapshot import epoch, metadata_snapshot, new_uuid, snapshot
from codeweaver_telemetry._types import (
    ERROR_EVENT,
    FLAG_CALLED_EVENT,
    HEARTBEAT_EVENT,
    SEARCH_EVENT,
    SESSION_EVENT,
    Event,
    SessionMetadata,
)

if TYPE_CHECKING:
    from codeweaver_telemetry._config import SettingsView
    from codeweaver_telemetry._heartbeat import Heartbeat
    from codeweaver_telemetry._worker import Worker
    from codeweaver_telemetry.events.stats import SessionStatistics
    from codeweaver_telemetry.flags import FlagCache, FlagValue
    from codeweaver_telemetry.privacy.hashing import KeyProvider

__all__ = ["OFF", "Off", "Running"]

_ERROR_EVENTS_PER_FINGERPRINT = 5  # per session; later repeats are only counted
_ERROR_FINGERPRINTS = 100  # distinct errors sent as events per session
_FLAGS_CALLED_MAX = 1000  # distinct (flag, value) exposures sent per session
_CAPTURED_MARK = "_codeweaver_telemetry_fingerprint"

_PENDING_SEARCH: Any = None


def _pending_search_class() -> Any:
    """``PendingSearch``, imported on first use, then kept (a light module: the event
    itself, with pydantic and the scrubber, is built on the worker)."""
    global _PENDING_SEARCH
    if _PENDING_SEARCH is None:
        from codeweaver_telemetry.events._gather import PendingSearch

        _PENDING_SEARCH = PendingSearch
    return _PENDING_SEARCH


class _OffRecorder:
    """What an instrument of a client that is off resolves to."""

    enabled = False


def _off_recorder() -> Any:
    return _OffRecorder


class Off:
    """The null object: a client that is off (or closed) does nothing and answers so."""

    enabled = False
    distinct_id = None
    session_id = None
    statistics = None
    heartbeat = None
    timer_off = Timer(_off_recorder, "")
    errors_off = ErrorCapture(_off_recorder)

    def stats(self) -> dict[str, Any]:
        return {"sent": 0, "dropped": {}, "pending": 0, "spooled": 0}

    def start_session(self, metadata: object = None) -> str | None:
        return None

    def end_session(self) -> None:
        return None

    def end(self, overrides: object = None, stats: object = None) -> bool:
        return False

    def preview(self) -> dict[str, Any] | None:
        return None

    def capture(self, *args: Any, **kwargs: Any) -> str | None:
        return None

    capture_from_event = capture
    capture_with_serialization = capture
    capture_error = capture

    def capture_search_event(self, *args: Any, **kwargs: Any) -> None:
        return None

    capture_session_event = capture_search_event
    record = capture_search_event
    start_heartbeat = capture_search_event
    refresh_feature_flags = capture_search_event

    def timer(self, resolve: Callable[[], Recorder], name: str) -> Timer:
        return self.timer_off

    def capture_exceptions(self, resolve: Callable[[], Recorder], **options: Any) -> ErrorCapture:
        return self.errors_off

    def get_feature_flag(self, key: str, default: FlagValue | None = None) -> FlagValue | None:
        return default

    def get_all_feature_flags(self) -> dict[str, FlagValue]:
        return {}

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def leave(self) -> None:
        return None


#: The one null object.
OFF = Off()


class Running:
    """A client that is on: sessions, capture, errors, heartbeat, flags, delivery, exit."""

    enabled = True

    def __init__(
        self,
        settings: SettingsView,
        *,
        distinct_id: str,
        key_provider: KeyProvider,
        worker: Worker,
        flag_cache: FlagCache | None,
        flag_source: Any,
        on_revoked: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._lock = threading.RLock()
        self._closed = False
        self.distinct_id: str | None = distinct_id
        self.key_provider = key_provider
        self._worker = worker
        self._flag_cache = flag_cache
        self._flag_source = flag_source
        self._on_revoked = on_revoked
        self._exit_timeout = settings.exit_timeout_seconds
        self._flag_events = settings.send_feature_flag_events
        self._waited_s = 0.0  # time spent in flushes that timed out since the last success
        self._sent_at_wait = 0  # the worker's sent count at the last flush that timed out
        self._hasher: Callable[[object], str] | None = None
        self._session: Session | None = None
        self._metadata: SessionMetadata | None = None
        self._flags_seen: dict[str, FlagValue] = {}
        self._errors_sent: dict[str, int] = {}  # error events per fingerprint, no session
        self._flags_called: set[tuple[str, FlagValue]] = set()  # exposures, no session
        self._context: Mapping[str, Any] = {}
        self.heartbeat: Heartbeat | None = None
        self._started_at = time.monotonic()
        self._refresh_context()

    def go(self) -> None:
        """Start: flush at exit, beat if asked to, drain what earlier runs left."""
        PROCESS.started(self)
        if self._flag_cache is not None:
            self._flag_cache.start()  # its thread waits idle: a first lookup creates none
        interval = self._settings.heartbeat_interval_seconds
        if interval is not None:
            self.start_heartbeat(interval)
        self._worker.start()  # idle until the first event: no thread is made on a capture
        self._worker.start_draining()  # what earlier runs could not send goes out now

    def revoked(self) -> None:
        """The worker found the stored choice changed: off from now on."""
        self.enabled = False
        if self.heartbeat is not None:
            self.heartbeat.stop(timeout_s=0)
        self._on_revoked()

    # -- state ----------------------------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        session = self._session
        return session.id if session else None

    @property
    def statistics(self) -> SessionStatistics | None:
        session = self._session
        return session.stats if session is not None else None

    def stats(self) -> dict[str, Any]:
        worker = self._worker
        return {
            "sent": worker.sent,
            "dropped": dict(worker.dropped),
            "pending": worker.pending,
            "spooled": worker.spooled,
        }

    # -- sessions -------------------------------------------------------------------------
    def start_session(self, metadata: Mapping[str, Any] | None = None) -> str | None:
        with internal_errors("start_session"), self._lock:
            if self._session is None:
                self._metadata = SessionMetadata(metadata_snapshot(metadata))
                self._session = Session()
                self._flags_seen = {}
                self._refresh_context()
                if self._flag_cache is not None:
                    self._flag_cache.prefetch(force=True)  # once per session
            return self._session.id
        return None

    def end_session(self) -> None:
        with internal_errors("end_session"):
            if self.end():
                self._worker.request_flush()

    def end(
        self,
        overrides: Mapping[str, Any] | None = None,
        stats: SessionStatistics | None = None,
    ) -> bool:
        """End the session, queueing its event; False when there was none."""
        with self._lock:
            session = self._session
            if session is None:
                return False
            try:
                event: object = session_event(session, overrides, stats)
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

    def preview(self) -> dict[str, Any] | None:
        with internal_errors("preview"):
            with self._lock:
                session = self._session
                if session is None:
                    return None
                event = session_event(session, None, None)
                context = self._context
            from codeweaver_telemetry import pipeline
            from codeweaver_telemetry.sinks.memory import to_payload

            done = pipeline.run(
                Event(
                    name=SESSION_EVENT,
                    properties={},
                    timestamp=time.time(),
                    uuid="",
                    distinct_id=self.distinct_id or "",
                    model=event,
                    context=context,
                )
            )
            return to_payload(done) if done is not None else None
        return None

    def _refresh_context(self) -> None:
        # Copy-on-write: events already queued keep the context they were captured with.
        session = self._session
        context: dict[str, Any] = {"key_provider": self.key_provider}
        if session is not None:
            context.update(
                session_id=session.id, metadata=self._metadata, flags=dict(self._flags_seen)
            )
        self._context = context

    # -- capture --------------------------------------------------------------------------
    def capture(
        self, event: str, properties: Mapping[str, Any] | None, *, timestamp: object = None
    ) -> str | None:
        with internal_errors("capture"):
            return self._enqueue(event, properties, None, timestamp=timestamp, with_uuid=True)
        return None

    def capture_from_event(self, obj: Any, *, timestamp: object = None) -> str | None:
        with internal_errors("capture_from_event"):
            schemas = sys.modules.get("codeweaver_telemetry.events.schemas")
            if schemas is not None and isinstance(obj, schemas.ShippedEvent):
                # Serialized on the worker, hashing under this client's key.
                return self._enqueue(obj.EVENT_NAME, None, obj, timestamp=timestamp, with_uuid=True)
            name, properties = obj.to_posthog_event()
            return self._enqueue(name, properties, None, timestamp=timestamp, with_uuid=True)
        return None

    def capture_with_serialization(
        self, event: str, model: object, *, timestamp: object = None
    ) -> str | None:
        with internal_errors("capture_with_serialization"):
            return self._enqueue(event, None, model, timestamp=timestamp, with_uuid=True)
        return None

    def capture_search_event(
        self,
        response: object,
        query: str | None,
        intent_type: object,
        strategies: Iterable[object],
        execution_time_ms: float | None,
        *,
        tools_over_privacy: bool | None,
        feature_flags: Mapping[str, FlagValue] | None,
    ) -> None:
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
                context = {**context, "flags": snapshot(dict(feature_flags))}
            self._enqueue(SEARCH_EVENT, None, pending, owned=True, context=context)
        except Exception as exc:
            internal_error("capture_search_event", exc)

    def _tools_over_privacy(self, argument: bool | None) -> bool:
        """The argument, else the setting; a "no" the user set explicitly always wins."""
        settings = self._settings
        if "tools_over_privacy" in settings.model_fields_set and not settings.tools_over_privacy:
            return False
        return settings.tools_over_privacy if argument is None else argument is True

    def capture_session_event(
        self, stats: SessionStatistics | None, overrides: Mapping[str, Any]
    ) -> None:
        with internal_errors("capture_session_event"):
            if not self.end(overrides, stats) and stats is not None:
                event = session_event(None, overrides, stats)
                self._enqueue(SESSION_EVENT, None, event, reserved=True, owned=True)

    def record(self, method: str, *args: Any) -> None:
        """Call ``method`` of the session's statistics; nothing outside a session."""
        if self._session is None or not self.enabled:
            return
        # Under the lock: a record racing end_session lands in the session before its
        # event is built, or in no session, never in one whose event has gone.
        with internal_errors(method), self._lock:
            session = self._session
            if session is not None:
                getattr(session.stats, method)(*args)

    def timer(self, resolve: Callable[[], Recorder], name: str) -> Timer:
        return Timer(resolve, name)

    def capture_exceptions(self, resolve: Callable[[], Recorder], **options: Any) -> ErrorCapture:
        return ErrorCapture(resolve, **options)

    # -- errors ---------------------------------------------------------------------------
    def capture_error(
        self,
        exc: BaseException,
        *,
        handled: bool = True,
        include_message: bool = False,
        in_app: tuple[str, ...] | None = None,
    ) -> str | None:
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

            hasher = self._hasher = KeyedHasher.for_key(self.key_provider.key())
        return hasher(signature)

    # -- heartbeat ------------------------------------------------------------------------
    def start_heartbeat(self, interval_s: float) -> None:
        from codeweaver_telemetry._heartbeat import Heartbeat

        worker = self._worker

        def failing() -> bool:
            return worker.consecutive_failures > 0

        self.heartbeat = Heartbeat(interval_s, self._beat, failing)
        self.heartbeat.start()

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
        if self._closed:
            return None
        if not isinstance(name, str):
            logger.warning(
                "codeweaver_telemetry: an event name must be a str, not %s; event dropped",
                type(name).__name__,
            )
            return None
        event_uuid = new_uuid() if with_uuid else ""  # else assigned by the pipeline
        queued = self._worker.submit(
            Event(
                name=name,
                properties=snapshot(properties) if properties else {},
                timestamp=time.time() if timestamp is None else epoch(timestamp),
                uuid=event_uuid,
                distinct_id=self.distinct_id or "",
                # The library's own events are built fresh and never shared: no copy.
                model=model if owned or model is None else snapshot(model),
                context=self._context if context is None else context,
            ),
            reserved=reserved,
        )
        return event_uuid if queued and event_uuid else None

    # -- flags ----------------------------------------------------------------------------
    def get_feature_flag(self, key: str, default: FlagValue | None = None) -> FlagValue | None:
        cache = self._flag_cache
        if cache is None:
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
        cache = self._flag_cache
        if cache is None:
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
        cache = self._flag_cache
        if cache is None:
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

    # -- delivery and exit ----------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        with internal_errors("flush"):
            return self._flush(self._exit_timeout if timeout is None else timeout)
        return False

    def _flush(self, timeout: float) -> bool:
        started = time.monotonic()
        delivered = self._worker.flush(timeout)
        if delivered:
            self._waited_s = 0.0
        else:
            self._waited_s += time.monotonic() - started
            self._sent_at_wait = self._worker.sent
        return delivered

    def exit_bound(self) -> tuple[float, float]:
        """(the exit timeout, what is left of it after flushes that timed out).

        Once the worker has delivered anything since, the host is answering again and the
        whole bound is available.
        """
        if self._worker.sent > self._sent_at_wait:
            self._waited_s = 0.0
        return self._exit_timeout, max(0.0, self._exit_timeout - self._waited_s)

    def leave(self) -> None:
        """Leaving a ``with`` block: end the session and flush once, within one bound."""
        if not self.enabled:
            return
        with internal_errors("__exit__"):
            self.end()
            self._flush(self.exit_bound()[1])

    def shutdown(self, timeout: float | None = None) -> None:
        """End the session and stop within ``timeout`` (default: what is left of the bound,
        keeping a small share for writing the spool)."""
        started = time.monotonic()  # the bound counts from here, session event included
        with internal_errors("shutdown"):
            if timeout is None:
                timeout = max(self.exit_bound()[1], spool_reserve(self._exit_timeout))
            self.shutdown_by(started + float(timeout))
            return
        self.shutdown_by(started + self._exit_timeout)  # a timeout that is no number

    def shutdown_by(self, deadline: float) -> None:
        """End the session and stop, waiting no later than ``deadline``."""
        if self._closed:
            return
        with internal_errors("shutdown"):
            if self.heartbeat is not None:
                self.heartbeat.stop(timeout_s=0)  # a daemon: no wait out of the exit bound
            self.end()
            self._closed = True
            self.enabled = False
            self._worker.shutdown(max(0.0, deadline - time.monotonic()))
            if self._flag_source is not None:
                self._flag_source.shutdown()
            if self._flag_cache is not None:
                self._flag_cache.close()
        PROCESS.stopped(self)

    def after_fork(self) -> None:
        """In a forked child: fresh locks, and no share in the parent's session.

        The child's events still go out (its worker restarts on its own), but it must not
        end the parent's session (one session event per session) nor wait on the parent's
        work.
        """
        self._lock = threading.RLock()
        self._session = None
        self._metadata = None
        self._flags_seen = {}
        self._flags_called = set()
        self._waited_s = 0.0
        self._refresh_context()
        if self._flag_cache is not None:  # its fetch thread is the parent's
            self._flag_cache._after_fork()
        if self._flag_source is not None:
            self._flag_source._after_fork()
