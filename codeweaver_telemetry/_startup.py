# SPDX-License-Identifier: MIT OR Apache-2.0
"""Start-up of a client: the consent decision, the install's identity, and the wiring of
sink, spool, worker and flags. Imported only once telemetry may be on."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from codeweaver_telemetry._internal import internal_errors, logger
from codeweaver_telemetry._types import Event, ExportResult, HostState, Sink
from codeweaver_telemetry.consent import ConsentDecision, consent_sources, decide
from codeweaver_telemetry.state import ConsentWatch, StateError, StateStore

if TYPE_CHECKING:
    from codeweaver_telemetry._config import SettingsView
    from codeweaver_telemetry._core import Running

__all__ = ["AuditedSink", "spool_tag", "start"]

_YIELD_S = 0.001  # long enough for the starting thread to wake and take the GIL


def spool_tag(settings: SettingsView, sink: Sink | None) -> str:
    """Where spooled events may go: this PostHog project, the local log, or this sink type."""
    if sink is not None:
        return "sink-" + type(sink).__name__.lower()
    if settings.posthog_api_key is None:
        return "local"
    import hashlib

    destination = f"{settings.posthog_host}\0{settings.posthog_api_key.get_secret_value()}"
    return hashlib.sha256(destination.encode("utf-8")).hexdigest()[:16]


def _prepare_worker() -> None:
    """What the worker thread imports, done at once when it starts (under the lock that
    ``os.fork()`` waits for): a child forked at any moment inherits whole modules.

    It first gives the GIL back for a moment: the thread that started the worker (the app's
    first capture, or a first flag lookup's exposure event) returns at once, instead of
    waiting out the interpreter's switch interval (5 ms) behind this warm-up.
    """
    time.sleep(_YIELD_S)
    from codeweaver_telemetry import pipeline
    from codeweaver_telemetry.events import schemas  # noqa: F401  (Deferred events build here)

    pipeline.run(Event(name="warm_up", properties={"k": "v"}, timestamp=0.0, uuid="-"))


def _run_pipeline(event: Event, on_drop: Callable[[str], None]) -> Event | None:
    # Imported here, on the worker thread: the caller never pays for the privacy modules
    # (pydantic models, the scrubber's regex compilation).
    from codeweaver_telemetry import pipeline

    return pipeline.run(event, on_drop=on_drop)


class _DenyingPipeline:
    """:func:`_run_pipeline` with the user's deny lists applied last (built on the worker
    thread, at its first event)."""

    def __init__(self, events: tuple[str, ...], properties: tuple[str, ...]) -> None:
        self._events = events
        self._properties = properties
        self._stage: Any = None

    def __call__(self, event: Event, on_drop: Callable[[str], None]) -> Event | None:
        from codeweaver_telemetry import pipeline

        if self._stage is None:
            self._stage = pipeline.DenyStage(events=self._events, properties=self._properties)
        result: Event | None = pipeline.run(event, on_drop=on_drop, deny=self._stage)
        return result


def _pipeline(settings: SettingsView) -> Callable[[Event, Callable[[str], None]], Event | None]:
    """The worker's pipeline: the default one, or with the deny lists when there are any."""
    events, properties = _deny_lists(settings)
    if not events and not properties:
        return _run_pipeline
    return _DenyingPipeline(events, properties)


class AuditedSink:
    """Deliver to ``remote``; record in the local log what it accepted."""

    def __init__(self, remote: Sink, log: Sink) -> None:
        self._remote = remote
        self._log = log

    def export(self, batch: Any) -> Any:
        result = self._remote.export(batch)
        if result == ExportResult.SUCCESS:
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
        """The remote's Retry-After, for a worker that reads it from the sink."""
        return float(getattr(self._remote, "retry_after_s", 0.0) or 0.0)


class _DenyingSink:
    """The default sink, behind the deny lists once more: events spooled by an earlier run
    (before an entry was added) are filtered as they are drained, so nothing denied now is
    sent or logged. Live events have passed the same stage already (it changes them no
    further)."""

    def __init__(self, sink: Sink, events: tuple[str, ...], properties: tuple[str, ...]) -> None:
        self._sink = sink
        self._events = events
        self._properties = properties
        self._stage: Any = None

    def export(self, batch: Any) -> Any:
        if self._stage is None:
            from codeweaver_telemetry.pipeline import DenyStage

            self._stage = DenyStage(events=self._events, properties=self._properties)
        kept = [event for event in batch if self._stage(event) is not None]
        if not kept:
            return ExportResult.SUCCESS
        return self._sink.export(kept)

    def shutdown(self, timeout_s: float) -> None:
        self._sink.shutdown(timeout_s)

    def prepare(self) -> None:
        """The wrapped sink's imports, done when the worker thread starts."""
        prepare = getattr(self._sink, "prepare", None)
        if callable(prepare):
            prepare()

    @property
    def retry_after_s(self) -> float:
        """The wrapped sink's Retry-After."""
        return float(getattr(self._sink, "retry_after_s", 0.0) or 0.0)


def _deny_lists(settings: SettingsView) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (
        tuple(getattr(settings, "deny_events", ()) or ()),
        tuple(getattr(settings, "deny_properties", ()) or ()),
    )


def _default_sink(settings: SettingsView) -> Sink:
    events, properties = _deny_lists(settings)
    sink = _plain_sink(settings)
    if events or properties:
        return _DenyingSink(sink, events, properties)
    return sink


def _plain_sink(settings: SettingsView) -> Sink:
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
    return AuditedSink(remote, log) if settings.audit_log else remote


def start(
    settings: SettingsView,
    *,
    sink: Sink | None,
    config_error: str | None,
    on_notice: Callable[[str], None] | None,
    forced: ConsentDecision | None,
    on_revoked: Callable[[], None],
) -> tuple[ConsentDecision, Running | None]:
    """Decide, load the identity and wire a running client; (decision, None) when off."""
    store = StateStore(settings.resolved_state_dir)
    decision = forced or decide(
        consent_sources(settings, store, config_error=config_error, on_notice=on_notice)
    )
    if not decision.allowed:
        # A broken state file is a problem the user should hear about (once); every other
        # "off" is a choice, logged quietly.
        level = logging.WARNING if decision.source == "state_error" else logging.DEBUG
        logger.log(
            level,
            "codeweaver_telemetry: telemetry is off (%s: %s)",
            decision.source,
            decision.reason,
        )
        return decision, None
    try:
        install_id, key = store.ensure_identity()
    except (OSError, StateError) as exc:
        decision = ConsentDecision(
            False, "state_error", f"the state directory is not writable ({exc})"
        )
        logger.warning("codeweaver_telemetry: %s; telemetry is off", decision.reason)
        return decision, None
    from codeweaver_telemetry._core import Running
    from codeweaver_telemetry._spool import SPOOL_DIR, Spool
    from codeweaver_telemetry._worker import Worker
    from codeweaver_telemetry.privacy.hashing import InMemoryKeyProvider

    running: list[Running] = []

    def revoked() -> None:
        if running:
            running[0].revoked()

    host = HostState()  # the host's rate limit and outage: events and flags both obey it
    worker = Worker(
        sink=_default_sink(settings) if sink is None else sink,
        process=_pipeline(settings),
        batch_size=settings.batch_size,
        interval_s=settings.batch_interval_seconds,
        max_queue=settings.max_queue_size,
        spool=(
            Spool(
                settings.resolved_state_dir / SPOOL_DIR,
                tag=spool_tag(settings, sink),
                max_bytes=settings.spool_max_bytes,
            )
            if forced is None and settings.spool_max_bytes > 0
            else None
        ),
        max_retries=settings.max_retries,
        # The stored choice is asked again before every send and spool write.
        gate=ConsentWatch(store, install_id),
        install_id=install_id,
        prepare=_prepare_worker,
        on_revoked=revoked,
        host=host,
    )
    flag_source, flag_cache = _flags(settings, install_id, host, store)
    running.append(
        Running(
            settings,
            distinct_id=install_id,
            # This client's events hash under this install's key, whatever other clients do.
            key_provider=InMemoryKeyProvider(key),
            worker=worker,
            flag_cache=flag_cache,
            flag_source=flag_source,
            on_revoked=on_revoked,
        )
    )
    return decision, running[0]


def _flags(
    settings: SettingsView, install_id: str, host: HostState, store: StateStore
) -> tuple[Any, Any]:
    """(the flag source, its cache) for a PostHog project; (None, None) without one.

    The cache keeps what it fetches in ``<state_dir>/flags.json`` (for
    ``codeweaver-telemetry flags``), on its own thread, while the stored choice still
    allows this install id.
    """
    if settings.posthog_api_key is None:
        return None, None
    from codeweaver_telemetry.flags import FlagCache, FlagFile, PostHogFlags

    source = PostHogFlags.from_settings(settings, install_id, host_state=host)
    cache = FlagCache(
        source,
        budget_s=settings.flag_timeout_seconds,
        refresh_s=settings.flag_refresh_seconds,
        on_fetched=FlagFile(
            store.directory,
            install_id=install_id,
            source=source.evaluation,
            # Its own watch: the worker's is read on the worker thread only.
            gate=ConsentWatch(store, install_id),
        ),
    )
    return source, cache
