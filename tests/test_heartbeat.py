"""The heartbeat thread: beats on time, gives up only after failures in a row."""

from __future__ import annotations

import itertools
import threading

from codeweaver_telemetry._heartbeat import Heartbeat
from tests.helpers import wait_until


def test_only_failures_in_a_row_stop_the_heartbeat() -> None:
    """Failing, failing, healthy repeats: never 3 in a row, so the heartbeat keeps beating;
    then 3 failing checks in a row stop it."""
    pattern = list(itertools.islice(itertools.cycle([True, True, False]), 12))
    checks = iter([*pattern, True, True, True])
    lock = threading.Lock()

    def failing() -> bool:
        with lock:
            return next(checks, True)

    beats: list[int] = []
    heartbeat = Heartbeat(0.005, beats.append, failing, max_failures=3)
    heartbeat.start()
    assert wait_until(lambda: not heartbeat.running, timeout=5)
    assert heartbeat.stopped_by_failures
    assert len(beats) >= 13, "the pattern never had 3 failures in a row"


def test_stop_ends_the_thread_and_no_beat_follows() -> None:
    """After stop() the thread ends; no further beats are queued."""
    beats: list[int] = []
    heartbeat = Heartbeat(0.005, beats.append, lambda: False)
    heartbeat.start()
    assert wait_until(lambda: len(beats) >= 2)
    heartbeat.stop(timeout_s=1)
    assert not heartbeat.running
    count = len(beats)
    threading.Event().wait(0.05)
    assert len(beats) == count
    assert not heartbeat.stopped_by_failures
    assert beats[:2] == [1, 2]
