# SPDX-License-Identifier: MIT OR Apache-2.0
"""The opt-in heartbeat of a long-running process: one daemon thread, one event per interval.

The thread never keeps the process alive (daemon) and stops on shutdown. Before each beat it
asks whether delivery is failing (the worker's last export failed); after
:data:`MAX_FAILURES` failing beats in a row it stops for good with one log line, so an
unreachable host costs a service nothing but that line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from codeweaver_telemetry._internal import internal_errors, logger

__all__ = ["MAX_FAILURES", "Heartbeat"]

MAX_FAILURES = 3
"""Consecutive beats with failing delivery after which the heartbeat stops."""


class Heartbeat:
    """Call ``beat(n)`` every ``interval_s`` seconds until stopped or delivery keeps failing.

    Args:
        interval_s: seconds between beats.
        beat: queues beat number ``n`` (1, 2, ...); must not block.
        failing: True when delivery is failing now (checked before each beat).
    """

    def __init__(
        self,
        interval_s: float,
        beat: Callable[[int], None],
        failing: Callable[[], bool],
        *,
        max_failures: int = MAX_FAILURES,
    ) -> None:
        self._interval_s = interval_s
        self._beat = beat
        self._failing = failing
        self._max_failures = max_failures
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0
        """Beats queued so far."""
        self.stopped_by_failures = False
        """True once the heartbeat gave up because delivery kept failing."""

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="codeweaver-telemetry-heartbeat", daemon=True
            )
            self._thread.start()

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout_s: float = 0.1) -> None:
        """Stop beating; wait at most ``timeout_s`` for the thread (it is a daemon anyway)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(self._interval_s):
            with internal_errors("heartbeat"):
                failures = failures + 1 if self.beats and self._failing() else 0
                if failures >= self._max_failures:
                    self.stopped_by_failures = True
                    logger.warning(
                        "codeweaver_telemetry: the heartbeat stopped after %d failed deliveries "
                        "in a row; other events are still sent when the host answers",
                        failures,
                    )
                    return
                self.beats += 1
                self._beat(self.beats)
