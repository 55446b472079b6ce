# SPDX-License-Identifier: MIT OR Apache-2.0
"""codeweaver_telemetry: product telemetry users can trust, backed by PostHog.

Everything public is importable from here; the submodules are implementation. Names load
on first use, so ``import codeweaver_telemetry`` costs almost nothing, and a client that is
off never loads pydantic, the settings machinery or posthog.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the private module that defines it
_EXPORTS: dict[str, str] = {
    "AnonymityConversion": "privacy.rules",
    "BasedModel": "privacy.rules",
    "ConsentDecision": "consent",
    "DataclassSerializationMixin": "privacy.rules",
    "Event": "_types",
    "ExportResult": "_types",
    "FilteredKey": "privacy.rules",
    "FlagValue": "flags",
    "FunctionSink": "sinks.memory",
    "InMemoryKeyProvider": "privacy.hashing",
    "InMemorySink": "sinks.memory",
    "IntentType": "events.schemas",
    "KeyProvider": "privacy.hashing",
    "LocalJSONLSink": "sinks.jsonl",
    "MatchSummary": "events.schemas",
    "PostHogEventLike": "client",
    "Scrubber": "privacy.scrubber",
    "SearchEvent": "events.schemas",
    "SearchResponseSummary": "events.schemas",
    "SearchStrategy": "events.schemas",
    "SessionEvent": "events.schemas",
    "SessionStatistics": "events.stats",
    "Sink": "_types",
    "TelemetryClient": "client",
    "TelemetryConfigError": "_config",
    "TelemetryMixin": "privacy.rules",
    "TelemetryModel": "privacy.rules",
    "TelemetryRuleError": "privacy.rules",
    "TelemetrySettings": "settings",
    "capture": "_api",
    "capture_error": "_api",
    "capture_exceptions": "_api",
    "capture_search_event": "_api",
    "capture_session_event": "_api",
    "flush": "_api",
    "get_telemetry_client": "client",
    "install_excepthook": "_api",
    "is_secret_key": "privacy.scrubber",
    "read_log": "sinks.jsonl",
    "record_usage": "_api",
    "scrub": "privacy.scrubber",
    "serialize_for_telemetry": "privacy.rules",
    "shutdown": "_api",
    "timer": "_api",
    "track_usage": "_api",
}

__all__ = [
    "AnonymityConversion",
    "BasedModel",
    "ConsentDecision",
    "DataclassSerializationMixin",
    "Event",
    "ExportResult",
    "FilteredKey",
    "FlagValue",
    "FunctionSink",
    "InMemoryKeyProvider",
    "InMemorySink",
    "IntentType",
    "KeyProvider",
    "LocalJSONLSink",
    "MatchSummary",
    "PostHogEventLike",
    "Scrubber",
    "SearchEvent",
    "SearchResponseSummary",
    "SearchStrategy",
    "SessionEvent",
    "SessionStatistics",
    "Sink",
    "TelemetryClient",
    "TelemetryConfigError",
    "TelemetryMixin",
    "TelemetryModel",
    "TelemetryRuleError",
    "TelemetrySettings",
    "capture",
    "capture_error",
    "capture_exceptions",
    "capture_search_event",
    "capture_session_event",
    "flush",
    "get_telemetry_client",
    "install_excepthook",
    "is_secret_key",
    "read_log",
    "record_usage",
    "scrub",
    "serialize_for_telemetry",
    "shutdown",
    "timer",
    "track_usage",
]


# Namespaces published beside the top level: privacy rules and the scrubber, sinks, and the
# helpers for an app's tests.
_NAMESPACES = frozenset({"privacy", "sinks", "testing"})


def __getattr__(name: str) -> Any:
    if name in _NAMESPACES:
        return importlib.import_module(f"codeweaver_telemetry.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'codeweaver_telemetry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"codeweaver_telemetry.{module}"), name)
    if isinstance(value, type) or (callable(value) and hasattr(value, "__code__")):
        # reprs and docs show codeweaver_telemetry.X, not the private module
        with contextlib.suppress(AttributeError, TypeError):
            value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from codeweaver_telemetry._api import (
        capture,
        capture_error,
        capture_exceptions,
        capture_search_event,
        capture_session_event,
        flush,
        install_excepthook,
        record_usage,
        shutdown,
        timer,
        track_usage,
    )
    from codeweaver_telemetry._config import TelemetryConfigError
    from codeweaver_telemetry._types import Event, ExportResult, Sink
    from codeweaver_telemetry.client import (
        PostHogEventLike,
        TelemetryClient,
        get_telemetry_client,
    )
    from codeweaver_telemetry.consent import ConsentDecision
    from codeweaver_telemetry.events.schemas import (
        IntentType,
        MatchSummary,
        SearchEvent,
        SearchResponseSummary,
        SearchStrategy,
        SessionEvent,
    )
    from codeweaver_telemetry.events.stats import SessionStatistics
    from codeweaver_telemetry.flags import FlagValue
    from codeweaver_telemetry.privacy.hashing import InMemoryKeyProvider, KeyProvider
    from codeweaver_telemetry.privacy.rules import (
        AnonymityConversion,
        BasedModel,
        DataclassSerializationMixin,
        FilteredKey,
        TelemetryMixin,
        TelemetryModel,
        TelemetryRuleError,
        serialize_for_telemetry,
    )
    from codeweaver_telemetry.privacy.scrubber import Scrubber, is_secret_key, scrub
    from codeweaver_telemetry.settings import TelemetrySettings
    from codeweaver_telemetry.sinks.jsonl import LocalJSONLSink, read_log
    from codeweaver_telemetry.sinks.memory import FunctionSink, InMemorySink
