# SPDX-License-Identifier: MIT OR Apache-2.0
"""Timers, usage counters and error capture, as context managers and decorators.

Each instrument finds its client when it runs (``resolve()``), not when it is made, so a
decorator applied at import time never builds a client nor decides consent early. When the
client is off, an instrument costs one attribute read and records nothing. Nothing here
raises into the host: the host's own exceptions pass through untouched.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

from codeweaver_telemetry._internal import internal_errors

__all__ = ["ErrorCapture", "Recorder", "Timer", "usage_decorator"]

F = TypeVar("F", bound=Callable[..., Any])


class Recorder(Protocol):
    """The part of the client the instruments use."""

    @property
    def enabled(self) -> bool:
        """True when the client records."""
        ...

    def record_timing(self, name: str, ms: float) -> None:
        """Record one duration in milliseconds under ``name``."""
        ...

    def record_usage(self, name: str, count: int = 1) -> None:
        """Count one use of ``name``."""
        ...

    def capture_error(
        self,
        exc: BaseException,
        *,
        handled: bool = True,
        include_message: bool = False,
        in_app: tuple[str, ...] | None = None,
    ) -> str | None:
        """Send an error event; return its fingerprint."""
        ...


def _wrap(
    func: F, before: Callable[[], Any], after: Callable[[Any, BaseException | None], None]
) -> F:
    """Wrap a sync or async function with ``before()`` and ``after(token, error)``."""
    import inspect  # here: about 6 ms to import, and only decorators need it

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            token = before()
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                after(token, exc)
                raise
            after(token, None)
            return result

        return cast(F, run_async)

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = before()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            after(token, exc)
            raise
        after(token, None)
        return result

    return cast(F, run)


# Start times of the open timer blocks, per thread and per asyncio task (each has its own
# context): one timer object may be entered by several threads or tasks at once, and
# re-entered by recursion, and each exit pairs with its own entry.
_STARTS: contextvars.ContextVar[tuple[tuple[int, float], ...]] = contextvars.ContextVar(
    "codeweaver_telemetry_timer_starts", default=()
)


class Timer:
    """Time a block or a function (sync or async) into the session's ``timings``.

    Use as ``with client.timer("index"):``, ``async with client.timer("index"):`` or
    ``@client.timer("index")``. Durations are recorded in milliseconds, also when the block
    raises; the session event carries count, avg, min, max, p50 and p95 per name (never an
    event per call).
    """

    __slots__ = ("_name", "_resolve")

    def __init__(self, resolve: Callable[[], Recorder], name: str) -> None:
        self._resolve = resolve
        self._name = name

    def _begin(self) -> float:
        return time.perf_counter()

    def _end(self, started: float, _: BaseException | None = None) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        with internal_errors("timer"):
            client = self._resolve()
            if client.enabled:
                client.record_timing(self._name, elapsed_ms)

    def __enter__(self) -> Timer:
        _STARTS.set((*_STARTS.get(), (id(self), self._begin())))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = _STARTS.get()
        for index in range(len(stack) - 1, -1, -1):  # this timer's latest entry
            if stack[index][0] == id(self):
                _STARTS.set(stack[:index] + stack[index + 1 :])
                self._end(stack[index][1])
                return

    async def __aenter__(self) -> Timer:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        """Decorate ``func`` (sync or async): each call is timed."""
        return _wrap(func, self._begin, self._end)


def usage_decorator(resolve: Callable[[], Recorder], name: str) -> Callable[[F], F]:
    """A decorator counting each call of the function (sync or async) under ``name``."""

    def count() -> None:
        with internal_errors("track_usage"):
            client = resolve()
            if client.enabled:
                client.record_usage(name)

    def decorate(func: F) -> F:
        return _wrap(func, count, lambda _token, _error: None)

    return decorate


class ErrorCapture:
    """Capture an exception leaving the block or function, then let it propagate.

    Only ``Exception`` subclasses are captured (not ``KeyboardInterrupt`` or ``SystemExit``);
    they are sent as unhandled (``handled: false``), since the block re-raises them.
    """

    __slots__ = ("_in_app", "_include_message", "_resolve")

    def __init__(
        self,
        resolve: Callable[[], Recorder],
        *,
        include_message: bool = False,
        in_app: tuple[str, ...] | None = None,
    ) -> None:
        self._resolve = resolve
        self._include_message = include_message
        self._in_app = in_app

    def _capture(self, exc: BaseException | None) -> None:
        if exc is None or not isinstance(exc, Exception):
            return
        with internal_errors("capture_exceptions"):
            client = self._resolve()
            if client.enabled:
                client.capture_error(
                    exc, handled=False, include_message=self._include_message, in_app=self._in_app
                )

    def __enter__(self) -> ErrorCapture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._capture(exc)

    async def __aenter__(self) -> ErrorCapture:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._capture(exc)

    def __call__(self, func: F) -> F:
        """Decorate ``func`` (sync or async): an exception it raises is captured, re-raised."""
        return _wrap(func, lambda: None, lambda _token, error: self._capture(error))
