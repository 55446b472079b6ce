# SPDX-License-Identifier: MIT OR Apache-2.0
"""The package logger (one line per kind of problem) and the guard at every boundary."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator

__all__ = [
    "ENV_PREFIX",
    "DuplicateFilter",
    "env_flag",
    "internal_error",
    "internal_errors",
    "log_once",
    "logger",
]

ENV_PREFIX = "CODEWEAVER__TELEMETRY__"
"""The prefix of every telemetry environment variable (note the double underscores)."""

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


def env_flag(name: str) -> bool | None:
    """A boolean environment variable: True, False, or None when unset or not a boolean."""
    value = os.environ.get(name)
    if value is None:
        return None
    value = value.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
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


_DUPLICATES = DuplicateFilter()
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
