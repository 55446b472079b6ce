# SPDX-License-Identifier: MIT OR Apache-2.0
"""The events the library ships: typed, strict (allowlist) models of the privacy core.

Every shipped event is an attrs class with :class:`DataclassSerializationMixin`, marked
``_telemetry_strict``: only the fields it declares leave the machine, each through the rule
or the scrubber the model names. Each has ``EVENT_NAME``, ``schema_version`` and
``to_posthog_event()``, so ``client.capture_from_event(event)`` and
``client.capture_with_serialization(event.EVENT_NAME, event)`` both work and both take the
whole privacy pipeline. Property names are stable; a change to them bumps
``schema_version``. The table of properties is in the README ("Events").

The events are built by the library from recorded activity (see
:class:`~codeweaver_telemetry.events.stats.SessionStatistics`) and from the arguments of the
capture helpers: a property is never a placeholder that is always zero.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar

import attrs
from pydantic import Field

from codeweaver_telemetry._types import (
    ERROR_EVENT,
    HEARTBEAT_EVENT,
    SEARCH_EVENT,
    SESSION_EVENT,
)
from codeweaver_telemetry.events._gather import MAX_MATCHES, PendingSearch, _list
from codeweaver_telemetry.events._props import Prop
from codeweaver_telemetry.events.stats import (
    MAX_KEY_CHARS,
    MAX_KEYS,
    OTHER_KEY,
    FailoverStats,
    HeartbeatCounters,
    RequestStats,
    SearchStats,
    SetupStats,
    TimingStats,
    TokenStats,
    as_key,
    error_kind,
    finite_float,
)
from codeweaver_telemetry.privacy.rules import (
    AnonymityConversion,
    BasedModel,
    DataclassSerializationMixin,
    FilteredKey,
)
from codeweaver_telemetry.privacy.scrubber import TRUNCATION_MARK, cut_words

__all__ = [
    "ERROR_EVENT",
    "HEARTBEAT_EVENT",
    "MAX_LABEL_CHARS",
    "QUERY_TEXT_CHARS",
    "SCHEMA_VERSION",
    "SEARCH_EVENT",
    "SESSION_EVENT",
    "ErrorEvent",
    "HeartbeatEvent",
    "IntentType",
    "MatchSummary",
    "Prop",
    "SearchEvent",
    "SearchResponseSummary",
    "SearchStrategy",
    "SessionEvent",
    "ShippedEvent",
    "build_search_event",
    "label",
]

SCHEMA_VERSION = 1
"""The version of the shipped events' property names and meanings."""
MAX_LABEL_CHARS = MAX_KEY_CHARS
"""App-given labels (intents, strategies, statuses) are cut to this many characters."""
QUERY_TEXT_CHARS = 200
"""``query.text`` (only with ``tools_over_privacy``) is cut to this many characters."""


class IntentType(str, enum.Enum):
    """Why the user searched. Apps may pass their own ``str`` enums or plain strings."""

    UNDERSTAND = "understand"
    IMPLEMENT = "implement"
    DEBUG = "debug"
    OPTIMIZE = "optimize"
    TEST = "test"
    CONFIGURE = "configure"
    DOCUMENT = "document"


class SearchStrategy(str, enum.Enum):
    """How a search was run. Apps may pass their own ``str`` enums or plain strings."""

    HYBRID = "hybrid"
    DENSE = "dense"
    SPARSE = "sparse"
    KEYWORD = "keyword"
    RERANK = "rerank"


def label(value: object) -> str:
    """An app-given label as sent, named as the session statistics name it: a string, an
    enum's value (its name when the value is no string), or ``str()`` of anything else; cut
    to 64 characters at a word boundary.

    Labels that are not a shipped enum's value go through the scrubber in the pipeline, like
    every string the library did not write itself.
    """
    key = as_key(value)
    return key if key is not None else cut_words(str(value), MAX_LABEL_CHARS)


# -- what the app tells us about a search ---------------------------------------------------------
class MatchSummary(BasedModel):
    """One result of a search: only its relevance score and match type are ever read."""

    score: float = Field(description="relevance score, usually 0-1")
    match_type: str = Field(default="unknown", description="for example 'semantic', 'keyword'")


class SearchResponseSummary(BasedModel):
    """What a search returned, as :func:`capture_search_event` reads it.

    Any object with these attributes is accepted in its place. Nothing of it is sent as is:
    the search event carries counts, a score summary and distributions only (never file
    names, paths or code).
    """

    candidates: int = Field(default=0, description="results considered before cutting")
    returned: int | None = Field(default=None, description="results returned (default: matches)")
    token_count: int = Field(default=0, description="tokens in the response")
    matches: list[MatchSummary] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list, description="languages of the results")
    status: str = Field(default="success", description="for example 'success', 'partial'")
    warnings: list[str] = Field(default_factory=list, description="only their number is sent")
    index_state: str | None = Field(default=None, description="for example 'ready', 'indexing'")
    index_coverage: float | None = Field(default=None, description="share indexed, 0-1")


# -- shared parts ---------------------------------------------------------------------------------
class ShippedEvent(DataclassSerializationMixin):
    """What every shipped event has: a name and ``to_posthog_event()``."""

    __slots__ = ()
    EVENT_NAME: ClassVar[str] = ""
    _telemetry_strict: ClassVar[bool] = True

    def to_posthog_event(self) -> tuple[str, dict[str, Any]]:
        """The event name and its properties after this model's privacy rules."""
        return self.EVENT_NAME, self.serialize_for_telemetry()


def _count(value: object) -> int:
    """A non-negative whole count from any real number; 0 when there is none."""
    number = finite_float(value)
    if number is None or number <= 0:
        return 0
    return int(min(number, 2.0**53))


def _round(value: float) -> float:
    return round(value, 4)


_SCHEMA_VERSION = Prop("the version of the event's property names and meanings")
_LABEL = "label"
"""Rule of an app-given label: scrubbed, cut to 64 characters at a word boundary."""


@attrs.frozen(slots=True)
class _Results(DataclassSerializationMixin):
    """Result counts of a search."""

    _telemetry_strict: ClassVar[bool] = True
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset(
        {"candidates", "returned", "token_count"}
    )
    candidates: Annotated[int, Prop("results considered before cutting")]
    returned: Annotated[int, Prop("results returned (default: number of matches)")]
    token_count: Annotated[int, Prop("tokens in the response")]


@attrs.frozen(slots=True)
class _Quality(DataclassSerializationMixin):
    """Relevance scores of the matches (4 decimals; null when there are none)."""

    _telemetry_strict: ClassVar[bool] = True
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset({"avg", "min", "max", "median"})
    avg: Annotated[float | None, Prop("mean relevance score of the matches")]
    min: Annotated[float | None, Prop("lowest relevance score of the matches")]
    max: Annotated[float | None, Prop("highest relevance score of the matches")]
    median: Annotated[float | None, Prop("median relevance score of the matches")]

    @classmethod
    def of(cls, scores: list[float]) -> _Quality:
        if not scores:
            return cls(None, None, None, None)
        scores.sort()
        n = len(scores)
        mid = n // 2
        median = scores[mid] if n % 2 else (scores[mid - 1] + scores[mid]) / 2
        return cls(_round(sum(scores) / n), _round(scores[0]), _round(scores[-1]), _round(median))


@attrs.frozen(slots=True)
class _Index(DataclassSerializationMixin):
    """The state of the app's search index."""

    _telemetry_strict: ClassVar[bool] = True
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset({"state", "coverage"})
    state: Annotated[
        str | None, Prop("for example `ready`, `indexing`; null when not given", rule=_LABEL)
    ]
    coverage: Annotated[float | None, Prop("share indexed, 0-1, 4 decimals")]


@attrs.frozen(slots=True)
class _Query(DataclassSerializationMixin):
    """Counts always; the scrubbed text and its keyed hash only with tools_over_privacy."""

    _telemetry_strict: ClassVar[bool] = True
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset({"char_count", "term_count", "text"})
    _telemetry_rules: ClassVar[Mapping[FilteredKey, AnonymityConversion] | None] = {
        FilteredKey("hash"): AnonymityConversion.HASH
    }
    char_count: Annotated[int, Prop("characters in the query", rule="text count")]
    term_count: Annotated[int, Prop("whitespace-separated terms in the query", rule="count")]
    text: Annotated[
        str | None,
        Prop(
            "the query, only with `tools_over_privacy`",
            rule="scrubbed, then cut to 200",
            omitted_when_none=True,
        ),
    ] = None
    hash: Annotated[
        str | None,
        Prop("keyed hash of the query, only with `tools_over_privacy`", omitted_when_none=True),
    ] = None

    def _telemetry_handler(self, serialized: dict[str, Any]) -> dict[str, Any]:
        # Absent unless opted in (not null); the text is cut after the scrubber ran.
        for key in ("text", "hash"):
            if serialized.get(key) is None:
                serialized.pop(key, None)
        text = serialized.get("text")
        if isinstance(text, str) and len(text) > QUERY_TEXT_CHARS:
            serialized["text"] = _cut_text(text, QUERY_TEXT_CHARS)
        return serialized


def _cut_text(text: str, limit: int) -> str:
    """Cut scrubbed text to ``limit`` characters without splitting a ``<marker>``."""
    cut = text[: limit - 1]
    opening = cut.rfind("<")
    if opening > cut.rfind(">"):  # the cut falls inside a marker: drop the marker's start
        cut = cut[:opening]
    return cut + TRUNCATION_MARK


# -- SearchEvent ----------------------------------------------------------------------------------
@attrs.frozen(slots=True)
class SearchEvent(ShippedEvent):
    """``codeweaver_search``: one search, as counts, a score summary and distributions.

    Build it with :meth:`from_response` (what :func:`capture_search_event` does). The query
    itself is sent only as its character and term counts, unless ``tools_over_privacy`` is
    on: then ``query.text`` (scrubbed, cut to 200 characters) and ``query.hash`` (keyed
    HASH) are added.
    """

    EVENT_NAME: ClassVar[str] = SEARCH_EVENT
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset(
        {
            "intent",
            "strategies",
            "status",
            "results",
            "quality",
            "index",
            "query",
            "schema_version",
            "execution_time_ms",
            "warning_count",
        }
    )

    _telemetry_rules: ClassVar[Mapping[FilteredKey, AnonymityConversion] | None] = {
        FilteredKey("match_types"): AnonymityConversion.DISTRIBUTION,
        FilteredKey("languages"): AnonymityConversion.DISTRIBUTION,
    }

    intent: Annotated[str, Prop("why the user searched (`unknown` when not given)", rule=_LABEL)]
    strategies: Annotated[tuple[str, ...], Prop("how the search was run", rule=_LABEL)]
    execution_time_ms: Annotated[float | None, Prop("as given, 3 decimals; null when not given")]
    results: Annotated[_Results, Prop("result counts")]
    quality: Annotated[_Quality, Prop("relevance scores of the matches; null with none")]
    match_types: Annotated[tuple[str, ...], Prop("how the matches matched, counted")]
    languages: Annotated[tuple[str, ...], Prop("languages of the results, counted")]
    status: Annotated[str, Prop("for example `success`, `partial`", rule=_LABEL)]
    warning_count: Annotated[int, Prop("number of warnings; their text is never sent")]
    index: Annotated[_Index, Prop("the search index")]
    query: Annotated[_Query, Prop("the query, as counts unless `tools_over_privacy`")]
    schema_version: Annotated[int, _SCHEMA_VERSION] = SCHEMA_VERSION

    @classmethod
    def from_response(
        cls,
        response: object,
        *,
        query: str | None,
        intent_type: object,
        strategies: Iterable[object] = (),
        execution_time_ms: float | None = None,
        tools_over_privacy: bool = False,
    ) -> SearchEvent:
        """Read what may be sent from ``response`` (a :class:`SearchResponseSummary` or any
        object with its attributes) and the search's arguments."""
        return build_search_event(
            PendingSearch.gather(
                response,
                query=query,
                intent_type=intent_type,
                strategies=strategies,
                execution_time_ms=execution_time_ms,
                tools_over_privacy=tools_over_privacy,
            )
        )


def build_search_event(pending: PendingSearch) -> SearchEvent:
    """The finished :class:`SearchEvent` of a :class:`PendingSearch` (on the worker)."""
    scores: list[float] = []
    match_types: list[str] = []
    for raw_score, kind in pending.matched:
        score = finite_float(raw_score)
        if score is not None:
            scores.append(score)
        if kind is not None:
            match_types.append(label(kind))
    elapsed = finite_float(pending.elapsed)
    coverage = finite_float(pending.index_coverage)
    text: str = pending.query
    return SearchEvent(
        intent=label(pending.intent) if pending.intent is not None else "unknown",
        strategies=tuple(label(s) for s in pending.strategies),
        execution_time_ms=round(elapsed, 3) if elapsed is not None else None,
        results=_Results(
            _count(pending.candidates), _count(pending.returned), _count(pending.token_count)
        ),
        quality=_Quality.of(scores),
        match_types=tuple(match_types),
        languages=tuple(label(x) for x in pending.languages),
        status=label(pending.status),
        warning_count=pending.warning_count,
        index=_Index(
            label(pending.index_state) if pending.index_state is not None else None,
            round(coverage, 4) if coverage is not None else None,
        ),
        query=_Query(
            char_count=len(text),
            term_count=len(text.split()),
            text=text if pending.opted_in else None,
            hash=text if pending.opted_in else None,
        ),
    )


# -- SessionEvent ---------------------------------------------------------------------------------
@attrs.frozen(slots=True)
class SessionEvent(ShippedEvent):
    """``codeweaver_session``: one session's activity, aggregated; sent once per session.

    Built by the client from its :class:`SessionStatistics` when the session ends. The maps
    (``usage``, ``languages``, ``timings``, ``errors``, the per-intent and per-strategy counts)
    are keyed by app-given labels, which the pipeline scrubs; errors are keyed by their
    fingerprint, never by a message.
    """

    EVENT_NAME: ClassVar[str] = SESSION_EVENT
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset(
        {
            "version",
            "setup",
            "requests",
            "searches",
            "tokens",
            "languages",
            "failover",
            "usage",
            "timings",
            "errors",
            "schema_version",
            "duration_seconds",
        }
    )

    duration_seconds: Annotated[
        float | None, Prop("session length (or as given), 3 decimals; null when unknown")
    ]
    setup: Annotated[dict[str, Any], Prop("the app's set-up", wire=SetupStats)]
    requests: Annotated[dict[str, Any], Prop("requests", wire=RequestStats)]
    searches: Annotated[dict[str, Any], Prop("searches", wire=SearchStats)]
    tokens: Annotated[dict[str, Any], Prop("tokens", wire=TokenStats)]
    languages: Annotated[
        dict[str, Any],
        Prop("`record_languages`, counted per language", rule="distribution", wire=dict[str, int]),
    ]
    failover: Annotated[dict[str, Any], Prop("failovers", wire=FailoverStats)]
    usage: Annotated[
        dict[str, Any],
        Prop(
            "`record_usage`, `@track_usage` calls per name", rule="label keys", wire=dict[str, int]
        ),
    ]
    timings: Annotated[
        dict[str, Any],
        Prop(
            "timers by name (ms); `record_request` latencies under `request`",
            rule="label keys",
            wire=dict[str, TimingStats],
        ),
    ]
    errors: Annotated[
        dict[str, Any],
        Prop(
            "errors captured in the session, per fingerprint", rule="hash keys", wire=dict[str, int]
        ),
    ]
    version: Annotated[
        str | None,
        Prop("only when given to `capture_session_event`", rule=_LABEL, omitted_when_none=True),
    ] = None
    schema_version: Annotated[int, _SCHEMA_VERSION] = SCHEMA_VERSION

    @classmethod
    def from_snapshot(
        cls,
        snapshot: Mapping[str, Any],
        *,
        duration_seconds: float | None,
        version: str | None = None,
        setup_success: bool | None = None,
        setup_attempts: int | None = None,
        config_errors: Iterable[object] = (),
    ) -> SessionEvent:
        """Build from :meth:`SessionStatistics.snapshot` output plus the session's facts.

        ``setup_success`` / ``setup_attempts`` override what was recorded; each of
        ``config_errors`` (an exception, an exception class, or a kind name) adds one to
        ``setup.error_kinds`` under its type name (never its message).
        """
        setup = dict(snapshot.get("setup") or {})
        if setup_success is not None:
            setup["success"] = bool(setup_success)
        if setup_attempts is not None:
            setup["attempts"] = _count(setup_attempts)
        kinds = dict(setup.get("error_kinds") or {})
        for error in _list(config_errors)[:MAX_MATCHES]:
            kind = error_kind(error)
            if kind is None:
                continue
            if kind not in kinds and len(kinds) >= MAX_KEYS:
                kind = OTHER_KEY  # bounded like every map of the session event
            kinds[kind] = kinds.get(kind, 0) + 1
        setup["error_kinds"] = kinds
        elapsed = finite_float(duration_seconds)
        return cls(
            duration_seconds=round(max(0.0, elapsed), 3) if elapsed is not None else None,
            setup=setup,
            requests=dict(snapshot.get("requests") or {}),
            searches=dict(snapshot.get("searches") or {}),
            tokens=dict(snapshot.get("tokens") or {}),
            languages=dict(snapshot.get("languages") or {}),
            failover=dict(snapshot.get("failover") or {}),
            usage=dict(snapshot.get("usage") or {}),
            timings=dict(snapshot.get("timings") or {}),
            errors=dict(snapshot.get("errors") or {}),
            version=label(version) if version is not None else None,
        )

    def _telemetry_handler(self, serialized: dict[str, Any]) -> dict[str, Any]:
        if serialized.get("version") is None:  # leave a session metadata "version" alone
            serialized.pop("version", None)
        return serialized


# -- ErrorEvent -----------------------------------------------------------------------------------
@attrs.frozen(slots=True)
class ErrorEvent(ShippedEvent):
    """``codeweaver_error``: an exception's type, in-app frames and fingerprint.

    ``frames`` are ``module:function`` names (no paths, no line text, no line numbers).
    ``fingerprint`` is the keyed HASH of the type and frames, so the same bug groups across
    runs of one install and cannot be looked up elsewhere. ``message`` is present only when
    the call opted in, and then after the scrubber, cut to 200 characters.
    """

    EVENT_NAME: ClassVar[str] = ERROR_EVENT
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset(
        {"type", "frames", "cause_types", "message", "schema_version", "fingerprint", "handled"}
    )

    type: Annotated[str, Prop("`ValueError`; `mypkg.errors.ConfigError` for non-builtins")]
    frames: Annotated[
        tuple[str, ...],
        Prop("in-app `module:function`, outermost first, the innermost 20; no paths or lines"),
    ]
    fingerprint: Annotated[
        str, Prop("keyed hash of type and frames (16 hex), computed by the library", rule="hash")
    ]
    handled: Annotated[bool, Prop("false from `capture_exceptions` and the excepthook")]
    cause_types: Annotated[
        tuple[str, ...], Prop("types along `__cause__` / `__context__`, at most 5")
    ] = ()
    message: Annotated[
        str | None,
        Prop(
            "only with `include_message=True`",
            rule="scrubbed, then cut to 200",
            omitted_when_none=True,
        ),
    ] = None
    schema_version: Annotated[int, _SCHEMA_VERSION] = SCHEMA_VERSION

    def _telemetry_handler(self, serialized: dict[str, Any]) -> dict[str, Any]:
        message = serialized.get("message")
        if message is None:
            serialized.pop("message", None)
        elif isinstance(message, str) and len(message) > QUERY_TEXT_CHARS:
            serialized["message"] = _cut_text(message, QUERY_TEXT_CHARS)
        return serialized


# -- HeartbeatEvent -------------------------------------------------------------------------------
@attrs.frozen(slots=True)
class HeartbeatEvent(ShippedEvent):
    """``codeweaver_heartbeat``: a long-running process is alive; its counters so far."""

    EVENT_NAME: ClassVar[str] = HEARTBEAT_EVENT
    _telemetry_allow: ClassVar[frozenset[str]] = frozenset(
        {"schema_version", "uptime_seconds", "beat", "session_seconds", "counters"}
    )

    uptime_seconds: Annotated[float, Prop("seconds since the client started")]
    beat: Annotated[int, Prop("1, 2, 3, ...")]
    session_seconds: Annotated[
        float | None,
        Prop("seconds since the session started; in a session only", omitted_when_none=True),
    ] = None
    counters: Annotated[
        dict[str, int] | None,
        Prop(
            "the session's counts so far; in a session only",
            wire=HeartbeatCounters,
            omitted_when_none=True,
        ),
    ] = None
    schema_version: Annotated[int, _SCHEMA_VERSION] = SCHEMA_VERSION

    def _telemetry_handler(self, serialized: dict[str, Any]) -> dict[str, Any]:
        for key in ("session_seconds", "counters"):
            if serialized.get(key) is None:
                serialized.pop(key, None)
        return serialized
