# SPDX-License-Identifier: MIT OR Apache-2.0
"""The package logger (one line per kind of problem) and the guard at every boundary."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import types
from collections.abc import Callable, Iterator

__all__ = [
    "ENV_PREFIX",
    "DuplicateFilter",
    "env_flag",
    "fork_safe_imports",
    "in_forked_child",
    "internal_error",
    "internal_errors",
    "log_once",
    "logger",
]

ENV_PREFIX = "CODEWEAVER__TELEMETRY__"
"""The prefix of every telemetry environment variable (note the double underscores)."""

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
"""Values (lower case, stripped) that mean true. An empty value means unset: neither."""
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
"""Values (lower case, stripped) that mean false. An empty value means unset: neither."""

# The further one-letter words pydantic accepts for a bool, so that env_flag reads a
# CODEWEAVER__TELEMETRY__ variable exactly as the settings do.
_FLAG_TRUE = TRUE_WORDS | {"t", "y"}
_FLAG_FALSE = FALSE_WORDS | {"f", "n"}


def env_flag(name: str) -> bool | None:
    """A boolean environment variable: True, False, or None when unset or not a boolean.

    An empty (or whitespace-only) value means unset, as it does for every setting: None.
    """
    value = os.environ.get(name)
    if value is None:
        return None
    value = value.strip().lower()
    if value in _FLAG_TRUE:
        return True
    if value in _FLAG_FALSE:
        return False
    return None


logger = logging.getLogger("codeweaver_telemetry")
"""The package logger, with a NullHandler: it prints nothing unless the host sets up logging."""


class DuplicateFilter(logging.Filter):
    """Let a (level, message) pair through at most once per time bucket.

    A telemetry problem tends to repeat on every event; the host's log should show it once,
    not once per event.
    """

    def __init__(self, bucket_s: float = 300.0) -> None:
        super().__init__()
        self._bucket_s = bucket_s
        self._seen: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "codeweaver_rate_limited", False):
            return True  # the caller limits these itself (the queue-full pair, once a minute)
        try:
            key = (record.levelno, record.getMessage())
        except Exception:  # a bad format string is still one kind of problem
            key = (record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < self._bucket_s:
                return False
            if len(self._seen) > 1024:
                self._seen.clear()
            self._seen[key] = now
        return True

    def reset(self) -> None:
        """Forget what was seen (tests)."""
        with self._lock:
            self._seen.clear()

    def _after_fork(self) -> None:
        # The parent's lock may have been held by a thread that does not exist here.
        self._lock = threading.Lock()


_DUPLICATES = DuplicateFilter()


def forget_duplicates() -> None:
    """Forget which warnings were logged, so each may be logged once again."""
    _DUPLICATES.reset()


logger.addHandler(logging.NullHandler())
logger.addFilter(_DUPLICATES)


def log_once(level: int, msg: str, *args: object) -> None:
    """Log through the package logger; repeats of the same message template are suppressed."""
    logger.log(level, msg, *args)


@contextlib.contextmanager
def internal_errors(where: str) -> Iterator[None]:
    """Swallow any exception raised inside the block and log it once per kind.

    Used at every public entry point and around every worker job, so a bug in telemetry
    never reaches the host program.
    """
    try:
        yield
    except Exception as exc:  # the host never pays for our bugs
        internal_error(where, exc)


def internal_error(where: str, exc: BaseException) -> None:
    """Log an exception swallowed at a public entry point (once per kind).

    For hot paths that catch with a plain ``try``/``except`` instead of
    :func:`internal_errors`, which costs about a microsecond more per call.
    """
    logger.warning(
        "codeweaver_telemetry: internal error in %s (%s); telemetry carries on",
        where,
        type(exc).__name__,
        exc_info=logger.isEnabledFor(logging.DEBUG),
    )


# -- imports on background threads, and os.fork() ---------------------------------------------
_FORK_WAIT_S = 2.0  # the most os.fork() waits for a background import to finish
_import_lock = threading.RLock()  # re-entrant: a sink's prepare() nests in the worker's
_fork_held = threading.local()  # per forking thread: did its before-fork wait get the lock?


@contextlib.contextmanager
def fork_safe_imports() -> Iterator[None]:
    """Hold the lock that ``os.fork()`` waits for (at most 2 s) while importing.

    A background thread's lazy import (the privacy pipeline, posthog) must not be cut in
    half by a fork: the child would inherit a half-initialised module whose import lock
    belongs to a thread that does not exist there, and hang or fail on it. Threads import
    under this lock; a fork waits for it, so a child always inherits whole modules.
    """
    with _import_lock:
        yield


def in_forked_child(callback: Callable[[], object]) -> None:
    """Run ``callback`` in every child this process forks (to renew its locks and thread
    state). A bound method is held weakly: the hook never keeps its object alive."""
    if not hasattr(os, "register_at_fork"):
        return
    if isinstance(callback, types.MethodType):
        import weakref

        ref = weakref.WeakMethod(callback)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m())
    else:
        os.register_at_fork(after_in_child=callback)


def _before_fork() -> None:
    _fork_held.held = _import_lock.acquire(timeout=_FORK_WAIT_S)


def _after_fork_in_parent() -> None:
    if getattr(_fork_held, "held", False):
        _fork_held.held = False
        _import_lock.release()


def _after_fork_in_child() -> None:
    global _import_lock, _fork_held
    _import_lock = threading.RLock()
    _fork_held = threading.local()
    _DUPLICATES._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
