# SPDX-License-Identifier: MIT OR Apache-2.0
"""The shipped events and session statistics (loaded on first use).

The module-level capture helpers (``capture_error``, ``timer``, ...) live in
``codeweaver_telemetry._api`` and are exported at the top level; they are still reachable
here under their old names, looked up on first use, so that this package never imports the
client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ErrorEvent",
    "HeartbeatEvent",
    "IntentType",
    "LatencySketch",
    "MatchSummary",
    "SearchEvent",
    "SearchResponseSummary",
    "SearchStrategy",
    "SessionEvent",
    "SessionStatistics",
    "capture_error",
    "capture_exceptions",
    "capture_search_event",
    "capture_session_event",
    "install_excepthook",
    "record_usage",
    "timer",
    "track_usage",
]

# Helpers that lived here before: found in codeweaver_telemetry._api on first use.
_HELPERS = frozenset(
    {
        "capture_error",
        "capture_exceptions",
        "capture_search_event",
        "capture_session_event",
        "install_excepthook",
        "record_usage",
        "timer",
        "track_usage",
    }
)

_LAZY: dict[str, str] = {
    "ErrorEvent": "schemas",
    "HeartbeatEvent": "schemas",
    "IntentType": "schemas",
    "MatchSummary": "schemas",
    "SearchEvent": "schemas",
    "SearchResponseSummary": "schemas",
    "SearchStrategy": "schemas",
    "SessionEvent": "schemas",
    "LatencySketch": "stats",
    "SessionStatistics": "stats",
}


def __getattr__(name: str) -> Any:
    if name in _HELPERS:
        return getattr(importlib.import_module("codeweaver_telemetry._api"), name)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from codeweaver_telemetry._api import (
        capture_error,
        capture_exceptions,
        capture_search_event,
        capture_session_event,
        install_excepthook,
        record_usage,
        timer,
        track_usage,
    )
    from codeweaver_telemetry.events.schemas import (
        ErrorEvent,
        HeartbeatEvent,
        IntentType,
        MatchSummary,
        SearchEvent,
        SearchResponseSummary,
        SearchStrategy,
        SessionEvent,
    )
    from codeweaver_telemetry.events.stats import LatencySketch, SessionStatistics
