# SPDX-License-Identifier: MIT OR Apache-2.0
"""The module-level helpers: each acts on the process-wide client.

They cost one attribute read when telemetry is off: they load nothing (no pydantic, no
models) and record nothing. Every helper is also a method of
:class:`~codeweaver_telemetry.TelemetryClient`, for apps that hold their own client.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from codeweaver_telemetry._internal import in_forked_child
from codeweaver_telemetry.client import TelemetryClient, get_telemetry_client

if TYPE_CHECKING:
    from codeweaver_telemetry._instruments import ErrorCapture, Timer
    from codeweaver_telemetry.events.stats import SessionStatistics
    from codeweaver_telemetry.flags import FlagValue

__all__ = [
    "capture",
    "capture_error",
    "capture_exceptions",
    "capture_search_event",
    "capture_session_event",
    "flush",
    "install_excepthook",
    "record_usage",
    "shutdown",
    "timer",
    "track_usage",
]

F = TypeVar("F", bound=Callable[..., Any])


def _client() -> TelemetryClient:
    return get_telemetry_client()


def capture(
    event: str,
    properties: Mapping[str, Any] | None = None,
    *,
    timestamp: dt.datetime | None = None,
) -> str | None:
    """Queue an event on the process-wide client; see :meth:`TelemetryClient.capture`."""
    return _client().capture(event, properties, timestamp=timestamp)


def flush(timeout: float | None = None) -> bool:
    """Send what the process-wide client has queued; see :meth:`TelemetryClient.flush`."""
    return _client().flush(timeout)


def shutdown(timeout: float | None = None) -> None:
    """Shut the process-wide client down now (it also is at exit); see
    :meth:`TelemetryClient.shutdown`."""
    _client().shutdown(timeout)


def capture_search_event(
    response: object,
    query: str | None = None,
    intent_type: object = None,
    strategies: Iterable[object] = (),
    execution_time_ms: float | None = None,
    *,
    tools_over_privacy: bool | None = None,
    feature_flags: Mapping[str, FlagValue] | None = None,
) -> None:
    """Send a ``codeweaver_search`` event; see :meth:`TelemetryClient.capture_search_event`."""
    client = _client()
    if client.enabled:
        client.capture_search_event(
            response,
            query,
            intent_type,
            strategies,
            execution_time_ms,
            tools_over_privacy=tools_over_privacy,
            feature_flags=feature_flags,
        )


def capture_session_event(
    stats: SessionStatistics | None = None,
    *,
    version: str | None = None,
    setup_success: bool | None = None,
    setup_attempts: int | None = None,
    config_errors: Iterable[object] = (),
    duration_seconds: float | None = None,
) -> None:
    """Send the session event now; see :meth:`TelemetryClient.capture_session_event`."""
    client = _client()
    if client.enabled:
        client.capture_session_event(
            stats,
            version=version,
            setup_success=setup_success,
            setup_attempts=setup_attempts,
            config_errors=config_errors,
            duration_seconds=duration_seconds,
        )


def capture_error(
    exc: BaseException,
    *,
    handled: bool = True,
    include_message: bool = False,
    in_app: tuple[str, ...] | None = None,
) -> str | None:
    """Send a ``codeweaver_error`` event; see :meth:`TelemetryClient.capture_error`."""
    client = _client()
    if not client.enabled:
        return None
    return client.capture_error(
        exc, handled=handled, include_message=include_message, in_app=in_app
    )


def capture_exceptions(
    *, include_message: bool = False, in_app: tuple[str, ...] | None = None
) -> ErrorCapture:
    """Capture an exception leaving the block or function, then re-raise it.

    The client is looked up when an exception passes, so this works as a decorator applied
    at import time. See :meth:`TelemetryClient.capture_exceptions`.
    """
    from codeweaver_telemetry._instruments import ErrorCapture

    return ErrorCapture(_client, include_message=include_message, in_app=in_app)


def record_usage(name: str, count: int = 1) -> None:
    """Count a use of ``name`` in the session's ``usage`` map (nothing outside a session)."""
    client = _client()
    if client.enabled:
        client.record_usage(name, count)


def track_usage(name: str) -> Callable[[F], F]:
    """Decorate a sync or async function: each call counts one use of ``name``.

    The client is looked up at call time, so decorating at import time is free.
    """
    from codeweaver_telemetry._instruments import usage_decorator

    return usage_decorator(_client, name)


def timer(name: str) -> Timer:
    """Time a block or function into the session's ``timings``; see
    :meth:`TelemetryClient.timer`. The client is looked up when the timer stops."""
    from codeweaver_telemetry._instruments import Timer

    return Timer(_client, name)


_HOOK_LOCK = threading.Lock()
_HOOKS: dict[str, Any] = {}


def _renew_hook_lock() -> None:  # a fork may land while another thread holds it
    global _HOOK_LOCK
    _HOOK_LOCK = threading.Lock()


in_forked_child(_renew_hook_lock)


def install_excepthook(*, in_app: tuple[str, ...] | None = None) -> Callable[[], None]:
    """Capture uncaught exceptions (main thread and threads) as unhandled errors.

    Opt-in. The hooks chain to whatever ``sys.excepthook`` and ``threading.excepthook``
    were before, so the usual traceback still prints. ``KeyboardInterrupt`` and
    ``SystemExit`` are not captured. Calling it again changes nothing.

    Returns:
        A function that puts the previous hooks back (if nobody replaced ours since).
    """
    from codeweaver_telemetry._instruments import ErrorCapture

    capture = ErrorCapture(_client, in_app=in_app)  # as a capture block: unhandled, re-raised
    with _HOOK_LOCK:
        if not _HOOKS:
            previous_sys = sys.excepthook
            previous_thread = threading.excepthook

            def sys_hook(
                exc_type: type[BaseException],
                exc: BaseException,
                tb: TracebackType | None,
            ) -> None:
                capture.__exit__(exc_type, exc, tb)
                previous_sys(exc_type, exc, tb)

            def thread_hook(args: threading.ExceptHookArgs) -> None:
                capture.__exit__(args.exc_type, args.exc_value, args.exc_traceback)
                previous_thread(args)

            _HOOKS.update(
                sys=sys_hook,
                thread=thread_hook,
                previous_sys=previous_sys,
                previous_thread=previous_thread,
            )
            sys.excepthook = sys_hook
            threading.excepthook = thread_hook
    return _uninstall_excepthook


def _uninstall_excepthook() -> None:
    with _HOOK_LOCK:
        if not _HOOKS:
            return
        if sys.excepthook is _HOOKS["sys"]:
            sys.excepthook = _HOOKS["previous_sys"]
        if threading.excepthook is _HOOKS["thread"]:
            threading.excepthook = _HOOKS["previous_thread"]
        _HOOKS.clear()
