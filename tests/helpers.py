"""Small helpers shared by the tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

SLACK_S = float(os.environ.get("CODEWEAVER_TEST_SLACK_S") or 0.5)
"""Seconds a timing assertion allows beyond the bound it checks; a slow or loaded machine
can raise it with CODEWEAVER_TEST_SLACK_S."""


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def within(call: Callable[[], object], timeout: float = 5.0) -> object:
    """Run ``call`` in a daemon thread and return what it returned or raised; fail (instead
    of hanging the suite) if it is still blocked after ``timeout`` seconds."""
    import threading

    box: list[object] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the call blocked"
    return box[0]
