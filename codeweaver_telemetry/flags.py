# SPDX-License-Identifier: MIT OR Apache-2.0
"""Feature flags: fetched in the background, cached, never slower than a budget, never raising.

Refresh policy: all flags for the install id are fetched with one request when each session
starts (or on the first lookup), then served from the cache. A lookup after
``refresh_s`` seconds triggers one background refetch while the cached values keep being
served. Only the first lookup of an empty cache waits, and for at most ``budget_s``; it
returns the caller's default if the answer is not there by then, and so do later lookups
until it arrives. A failed fetch keeps the previous values (or none) and is retried on the
next lookup after a back-off of ``refresh_s / 10`` (at least 5 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from codeweaver_telemetry._internal import internal_errors, logger

__all__ = ["FlagCache", "FlagValue"]

FlagValue = bool | str
"""A flag's value: its variant key for a multivariate flag, else True/False."""


class FlagCache:
    """A cache of all flags for one distinct id, filled by ``fetch`` on a daemon thread.

    Args:
        fetch: returns ``{flag_key: value}``; may block (it runs on a background thread)
            and may raise (the failure is logged once and the cache keeps what it had).
        budget_s: the longest the first lookup waits.
        refresh_s: age after which a lookup triggers a background refetch.
    """

    def __init__(
        self, fetch: Callable[[], dict[str, FlagValue]], *, budget_s: float, refresh_s: float
    ) -> None:
        self._fetch = fetch
        self._budget_s = budget_s
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._values: dict[str, FlagValue] | None = None
        self._fetched_at = 0.0
        self._failed_at = 0.0
        self._fetching = False
        self._waited = False

    def prefetch(self, *, force: bool = False) -> None:
        """Start a background fetch if none is running and the cache is empty or stale.

        ``force`` (a new session) fetches even a fresh cache; cached values keep being
        served until the new answer arrives.
        """
        now = time.monotonic()
        with self._lock:
            if self._fetching:
                return
            fresh = (
                not force and self._values is not None and now - self._fetched_at < self._refresh_s
            )
            retry_wait = max(5.0, self._refresh_s / 10)
            if fresh or (self._failed_at and now - self._failed_at < retry_wait):
                return
            self._fetching = True
        threading.Thread(target=self._run, name="codeweaver-telemetry-flags", daemon=True).start()

    def _run(self) -> None:
        values: dict[str, FlagValue] | None = None
        with internal_errors("feature flag fetch"):
            try:
                values = self._fetch()
            except Exception as exc:
                logger.warning(
                    "codeweaver_telemetry: feature flags could not be fetched (%s); "
                    "defaults are used",
                    type(exc).__name__,
                )
        with self._lock:
            self._fetching = False
            if values is not None:
                self._values = dict(values)
                self._fetched_at = time.monotonic()
                self._failed_at = 0.0
            else:
                self._failed_at = time.monotonic()
        self._ready.set()

    def all(self) -> dict[str, FlagValue]:
        """Every flag, waiting at most the budget on the very first lookup."""
        self.prefetch()
        with self._lock:
            values = self._values
            should_wait = values is None and not self._waited
            self._waited = True
        if should_wait:
            self._ready.wait(self._budget_s)
            with self._lock:
                values = self._values
        return dict(values) if values else {}

    def get(self, key: str) -> FlagValue | None:
        """One flag's value, or None when it is unknown (not fetched yet, or not defined)."""
        return self.all().get(key)
