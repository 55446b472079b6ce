# SPDX-License-Identifier: MIT OR Apache-2.0
"""TelemetryClient: the façade an app holds, over a running core or the null object "off".

On the caller's thread, ``capture`` does only three things: the consent gate (one attribute
read), a snapshot of the caller's data (later mutation of the caller's objects cannot change
what is sent, and the caller's objects are never modified, except that ``capture_error``
marks the exception object it captured), and a non-blocking enqueue. All privacy work
happens on the worker thread. Every public method swallows its own errors: nothing raises
into the host program.

The layout behind it: ``_startup`` decides and wires, ``_core.Running`` does the work while
on (sessions in ``_session``, snapshots in ``_snapshot``), ``_core.OFF`` answers while off,
and ``_process.PROCESS`` holds the process-wide client, the exit hooks and the fork hook.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast

from codeweaver_telemetry._core import OFF, Off
from codeweaver_telemetry._instruments import ErrorCapture, Timer
from codeweaver_telemetry._internal import internal_errors, logger
from codeweaver_telemetry._process import PROCESS
from codeweaver_telemetry._types import Sink
from codeweaver_telemetry.consent import (
    AppNotice,
    ConsentDecision,
    environment_decision,
    notice_version_error,
)

if TYPE_CHECKING:
    import datetime as dt

    from codeweaver_telemetry._config import SettingsView
    from codeweaver_telemetry._core import Running
    from codeweaver_telemetry._heartbeat import Heartbeat
    from codeweaver_telemetry.events.stats import SessionStatistics
    from codeweaver_telemetry.flags import FlagValue
    from codeweaver_telemetry.privacy.hashing import KeyProvider
    from codeweaver_telemetry.settings import TelemetrySettings

__all__ = ["ClientState", "PostHogEventLike", "TelemetryClient", "get_telemetry_client"]


class PostHogEventLike(Protocol):
    """Anything with ``to_posthog_event() -> (event name, properties)``."""

    def to_posthog_event(self) -> tuple[str, dict[str, Any]]:
        """Return the event name and its properties."""
        ...


class ClientState(enum.Enum):
    """Where a client is in its life."""

    OFF = "off"
    """Telemetry is off (a consent source said no, or it was turned off while running)."""
    ON = "on"
    """Events are collected and sent."""
    CLOSED = "closed"
    """Shut down: every method is a quiet no-op."""


class TelemetryClient:
    """Product telemetry for one process: consent, sessions, events, flags.

    Prefer :func:`get_telemetry_client` for the process-wide client. Construct one directly
    (``TelemetryClient(settings)``, :meth:`from_settings`) for tests or special set-ups.

    Args:
        settings: the settings; default: loaded from code, environment and config file.
        sink: where finished events go; default: PostHog when an API key is set, else the
            local JSON Lines log in the state directory.
        config_error: a settings problem found while loading (telemetry is then off).
        on_notice: shows the one-time notice to the user under the opt-out policy:
            ``consent.terminal_notice`` (standard error, only when it is a terminal) or the
            app's own callback. Without it the opt-out policy cannot show its notice, so
            telemetry stays off.
        notice_version: the version of the notice (a whole number, 1 by default). Raise it
            when what the app collects changes: the notice is then shown again, and the run
            that shows it sends nothing. A bad value is a configuration error (telemetry
            off, one warning).
    """

    def __init__(
        self,
        settings: TelemetrySettings | None = None,
        *,
        sink: Sink | None = None,
        config_error: str | None = None,
        on_notice: Callable[[str], None] | None = None,
        notice_version: int = 1,
    ) -> None:
        self._init(
            settings, sink, config_error, on_notice, forced=None, notice_version=notice_version
        )

    @classmethod
    def _decided(
        cls,
        decision: ConsentDecision,
        settings: TelemetrySettings | None = None,
        *,
        sink: Sink | None = None,
    ) -> TelemetryClient:
        """A client whose consent was decided by the library itself: ``testing`` (on, no
        spool) and a client asked for while the process-wide one is being built (off)."""
        client = cls.__new__(cls)
        client._init(settings, sink, None, None, forced=decision)
        return client

    def _init(
        self,
        settings: TelemetrySettings | None,
        sink: Sink | None,
        config_error: str | None,
        on_notice: Callable[[str], None] | None,
        *,
        forced: ConsentDecision | None,
        notice_version: int = 1,
    ) -> None:
        self._settings = settings
        # What start-up read: the settings given, or those the quick resolver read (the
        # TelemetrySettings model is then built only when asked for, see `settings`).
        self._view: SettingsView | None = settings
        self._core: Off | Running = OFF
        self._running: Running | None = None
        self._closed = False
        self.decision = ConsentDecision(False, "init", "not initialised")
        """Whether telemetry is on, which source decided, and why."""
        if forced is not None and not forced.allowed:
            self.decision = forced
            return
        with internal_errors("client start"):
            quick = None if forced else environment_decision()
            if quick is not None:  # off whatever the settings say: do not even load them
                self.decision = quick
                logger.debug("codeweaver_telemetry: telemetry is off (%s)", quick.reason)
                return
        if self.decision.source != "init":
            return
        view: SettingsView | None = settings
        if view is None:
            from codeweaver_telemetry._config import resolve

            # Plain settings are read without pydantic; anything else (a bad value among
            # them) goes through the model, which reports it.
            view = resolve()
        if view is None:
            # Outside the guard on purpose: load_settings never raises, except in strict
            # mode, where the developer asked for the TelemetryConfigError.
            from codeweaver_telemetry.settings import load_settings

            view, config_error = load_settings()
            self._settings = view
        self._view = view
        problem = notice_version_error(notice_version)
        if problem is not None:
            if config_error is None:
                config_error = problem
                logger.warning("codeweaver_telemetry: %s; telemetry is off", problem)
        elif notice_version != 1:
            # Start-up passes the callback on to consent, which takes the version out.
            on_notice = AppNotice(on_notice, notice_version)
        with internal_errors("client start"):
            from codeweaver_telemetry._startup import start

            self.decision, running = start(
                view,
                sink=sink,
                config_error=config_error,
                on_notice=on_notice,
                forced=forced,
                on_revoked=self._revoked,
            )
            if running is not None:
                self._running = running
                self._core = running
                running.go()

    @property
    def settings(self) -> TelemetrySettings:
        """The settings in use (built on first access: the values the client started with,
        or, when telemetry was off at once, loaded then)."""
        if self._settings is None:
            from codeweaver_telemetry._config import ResolvedSettings

            view = self._view
            if isinstance(view, ResolvedSettings):
                self._settings = view.to_settings()
            else:
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
        notice_version: int = 1,
        **options: Any,
    ) -> TelemetryClient:
        """Build a client from setting values given in code, over environment and file.

        Unlike ``TelemetrySettings(...)``, a bad value never raises (outside strict mode):
        it is logged once and telemetry stays off, as for the environment. ``on_notice``
        and ``notice_version`` are as for the constructor.

        Example: ``TelemetryClient.from_options(enabled=True, posthog_api_key="phc_...")``.
        """
        from codeweaver_telemetry.settings import load_settings

        settings, error = load_settings(**options)
        return cls(
            settings,
            sink=sink,
            config_error=error,
            on_notice=on_notice,
            notice_version=notice_version,
        )

    @property
    def enabled(self) -> bool:
        """True when events are collected and sent."""
        return self._core.enabled

    @property
    def distinct_id(self) -> str | None:
        """The anonymous install id (None when telemetry is off)."""
        running = self._running  # kept after shutdown, as events already sent carry it
        return running.distinct_id if running is not None else None

    @property
    def session_id(self) -> str | None:
        """The current session's id, or None outside a session."""
        return self._core.session_id

    def stats(self) -> dict[str, Any]:
        """Counters: events sent, dropped by reason, pending."""
        return (self._running or self._core).stats()

    def start_session(self, metadata: Mapping[str, Any] | None = None) -> str | None:
        """Start a session (idempotent) and return its id; None when telemetry is off.

        ``metadata`` is snapshotted now, goes through the privacy pipeline once (on the
        worker thread), and is attached to every event of the session. Feature flags are
        fetched in the background.
        """
        return self._core.start_session(metadata)

    def end_session(self) -> None:
        """End the session: queue its session event (once) and ask for it to be sent now.

        It never waits for delivery (use :meth:`flush` for that): the program's one wait
        on the network is at exit, within the exit bound. Leaving a ``with`` block and
        :meth:`shutdown` end the session too; whichever comes first sends the event, the
        others find no session. Outside a session this does nothing.
        """
        self._core.end_session()

    @property
    def statistics(self) -> SessionStatistics | None:
        """The current session's :class:`SessionStatistics`; None when off or outside one.

        The ``record_*`` methods of the client write to it and do nothing when there is no
        session, so apps rarely need it directly.
        """
        return self._core.statistics

    def preview(self) -> dict[str, Any] | None:
        """The session event exactly as the pipeline would send it now, without sending it.

        Returns the finished payload (``event``, ``distinct_id``, ``timestamp``, ``uuid``,
        ``properties``). The event sent when the session ends differs in ``uuid``,
        ``timestamp`` and ``duration_seconds``, and in whatever is recorded meanwhile.
        None when telemetry is off, outside a session, or if the pipeline would drop the
        event.
        """
        return self._core.preview()

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
        return self._core.capture(event, properties, timestamp=timestamp)

    def capture_from_event(
        self, obj: PostHogEventLike, *, timestamp: dt.datetime | None = None
    ) -> str | None:
        """Capture any object with ``to_posthog_event() -> (name, properties)``.

        Models among the properties keep their own privacy rules. ``timestamp`` and the
        returned uuid are as for :meth:`capture`.
        """
        return self._core.capture_from_event(obj, timestamp=timestamp)

    def capture_with_serialization(
        self, event: str, model: object, *, timestamp: dt.datetime | None = None
    ) -> str | None:
        """Capture ``model``'s ``serialize_for_telemetry()`` output as the properties.

        ``timestamp`` and the returned uuid are as for :meth:`capture`.
        """
        return self._core.capture_with_serialization(event, model, timestamp=timestamp)

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
        self._core.capture_search_event(
            response,
            query,
            intent_type,
            strategies,
            execution_time_ms,
            tools_over_privacy=tools_over_privacy,
            feature_flags=feature_flags,
        )

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
        overrides = {
            "version": version,
            "setup_success": setup_success,
            "setup_attempts": setup_attempts,
            "config_errors": config_errors,
            "duration_seconds": duration_seconds,
        }
        self._core.capture_session_event(stats, overrides)

    def record_request(self, ok: bool = True, latency_ms: float | None = None) -> None:
        """Count one request (and its latency) in the session; nothing outside a session."""
        self._core.record("record_request", ok, latency_ms)

    def record_tokens(self, generated: int = 0, delivered: int = 0, saved: int = 0) -> None:
        """Add token counts to the session."""
        self._core.record("record_tokens", generated, delivered, saved)

    def record_languages(self, languages: Iterable[str] | Mapping[str, int]) -> None:
        """Add languages (names, or name -> count) to the session's distribution."""
        self._core.record("record_languages", languages)

    def record_failover(self, seconds: float = 0.0) -> None:
        """Count one failover and the seconds it took."""
        self._core.record("record_failover", seconds)

    def record_setup(
        self, success: bool, attempts: int = 1, error_kinds: Iterable[object] = ()
    ) -> None:
        """Record the set-up outcome; error kinds are kept as type names, never messages."""
        self._core.record("record_setup", success, attempts, error_kinds)

    def record_usage(self, name: str, count: int = 1) -> None:
        """Count a use of a feature under ``name`` in the session's ``usage`` map."""
        self._core.record("record_usage", name, count)

    def record_timing(self, name: str, ms: float) -> None:
        """Record one duration (milliseconds) under ``name`` in the session's ``timings``."""
        self._core.record("record_timing", name, ms)

    def timer(self, name: str) -> Timer:
        """Time a block or function into the session's ``timings`` (never one event per call).

        ``with client.timer("index"): ...``, ``async with client.timer("index"): ...`` or
        ``@client.timer("index")`` on a sync or async function.
        """
        return self._core.timer(self._self, name)

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
        return self._core.capture_error(
            exc, handled=handled, include_message=include_message, in_app=in_app
        )

    def capture_exceptions(
        self, *, include_message: bool = False, in_app: tuple[str, ...] | None = None
    ) -> ErrorCapture:
        """A context manager and decorator that captures an exception, then re-raises it.

        ``with client.capture_exceptions(): ...`` or ``@client.capture_exceptions()`` (sync
        or async). The exception is sent as unhandled; see :meth:`capture_error`.
        """
        return self._core.capture_exceptions(
            self._self, include_message=include_message, in_app=in_app
        )

    def get_feature_flag(self, key: str, default: FlagValue | None = None) -> FlagValue | None:
        """The flag's value for this install, or ``default`` (never raises, bounded wait)."""
        return self._core.get_feature_flag(key, default)

    def get_all_feature_flags(self) -> dict[str, FlagValue]:
        """Every flag's value for this install; empty when unknown (never raises)."""
        return self._core.get_all_feature_flags()

    def refresh_feature_flags(self) -> None:
        """Fetch this install's flags again now, in the background; never waits.

        For an app that must see a flag change within a session: lookups keep answering
        from the cache and see the new values once they arrive. (Flags are otherwise
        fetched when each session starts and after ``FLAG_REFRESH_SECONDS``.)
        """
        self._core.refresh_feature_flags()

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued; wait at most ``timeout`` (default: the exit bound)."""
        running = self._running
        return True if running is None else running.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        """End the session, flush within ``timeout`` (default: the exit bound), stop.

        Idempotent; afterwards every method is a quiet no-op. When earlier flushes already
        waited on an unresponsive host, the default wait is what is left of the exit bound,
        so a program never waits more than the bound in all at its end.
        """
        if self._closed:
            return
        self._closed = True
        self._core = OFF
        if self._running is not None:
            self._running.shutdown(timeout)

    def __enter__(self) -> TelemetryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._core.leave()

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
        return f"<TelemetryClient {self.state.value} ({self.decision.source})>"

    @property
    def key_provider(self) -> KeyProvider | None:
        """The install's HASH key provider (None while off). Pass it as
        ``serialize_for_telemetry(key_provider=client.key_provider)`` for the same hashes
        this client's events carry."""
        running = self._running
        return running.key_provider if running is not None else None

    @property
    def state(self) -> ClientState:
        """:attr:`ClientState.ON`, :attr:`~ClientState.OFF` or :attr:`~ClientState.CLOSED`."""
        if self._closed:
            return ClientState.CLOSED
        return ClientState.ON if self._core.enabled else ClientState.OFF

    def _revoked(self) -> None:
        """The stored choice changed while running: this client is off from now on."""
        self._core = OFF
        self.decision = ConsentDecision(
            False,
            "stored_choice",
            "turned off while running (disabled, deleted, or a new install id)",
        )

    def _self(self) -> TelemetryClient:
        return self

    # Hooks for the test suite (the heartbeat's interval is 60 s at least in settings).
    def _start_heartbeat(self, interval_s: float) -> None:
        self._core.start_heartbeat(interval_s)

    @property
    def _heartbeat(self) -> Heartbeat | None:
        return self._core.heartbeat

    def _end_session(self) -> bool:
        return self._core.end()


def get_telemetry_client(
    *, on_notice: Callable[[str], None] | None = None, notice_version: int = 1
) -> TelemetryClient:
    """The process-wide client, created on first call from the environment and config file.

    Only the first call's arguments are used.

    Args:
        on_notice: shows the one-time notice to the user under the opt-out policy:
            ``consent.terminal_notice`` (standard error, only when it is a terminal) or the
            app's own callback; a callback that raises (``consent.NoticeNotShown`` to say
            why) has not shown it. Without it, the opt-out policy cannot show its notice,
            so telemetry stays off.
        notice_version: the version of the notice (a whole number, 1 by default). Raise it
            when what the app collects changes: the notice is shown again, and the run that
            shows it sends nothing, as on a first run.
    """
    client = PROCESS.client(
        lambda: TelemetryClient(on_notice=on_notice, notice_version=notice_version),
        # Asked again while it is being built (say, from on_notice): an off client.
        lambda: TelemetryClient._decided(ConsentDecision(False, "init", "still starting")),
    )
    return cast("TelemetryClient", client)


def _reset_for_tests() -> None:
    """Shut the process-wide client down (quickly) and forget it (``PROCESS.reset()``)."""
    PROCESS.reset()


def __getattr__(name: str) -> Any:
    if name == "_spool_tag":  # moved to _startup; kept for the benches and tests that use it
        from codeweaver_telemetry._startup import spool_tag

        return spool_tag
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
