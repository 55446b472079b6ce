"""The shipped event models: strict, versioned, private, and total on odd input."""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeweaver_telemetry import (
    IntentType,
    MatchSummary,
    SearchEvent,
    SearchResponseSummary,
    SearchStrategy,
    SessionEvent,
    SessionStatistics,
    get_telemetry_client,
)
from codeweaver_telemetry.events import ErrorEvent, HeartbeatEvent
from codeweaver_telemetry.events.schemas import MAX_LABEL_CHARS, QUERY_TEXT_CHARS, _cut_text
from codeweaver_telemetry.privacy.hashing import InMemoryKeyProvider
from codeweaver_telemetry.privacy.scrubber import TRUNCATION_MARK
from codeweaver_telemetry.testing import capture_events

KEYS = InMemoryKeyProvider(b"k" * 32)
EMAIL = "bob.smith@example.org"


def search(**kw: Any) -> SearchEvent:
    values: dict[str, Any] = {
        "query": "where is the config loaded",
        "intent_type": IntentType.UNDERSTAND,
        "strategies": [SearchStrategy.HYBRID],
        "execution_time_ms": 10.0,
    }
    values.update(kw)
    summary = SearchResponseSummary(
        candidates=9, matches=[MatchSummary(score=0.5, match_type="keyword")]
    )
    return SearchEvent.from_response(summary, **values)


def test_enums_name_the_documented_members() -> None:
    """IntentType and SearchStrategy have the documented values, usable as plain strings."""
    assert [i.value for i in IntentType] == [
        "understand",
        "implement",
        "debug",
        "optimize",
        "test",
        "configure",
        "document",
    ]
    assert {s.value for s in SearchStrategy} >= {"hybrid", "dense", "sparse", "keyword", "rerank"}
    assert IntentType.DEBUG == "debug"


@pytest.mark.parametrize(
    ("event", "keys"),
    [
        (
            search(),
            {
                "intent",
                "strategies",
                "execution_time_ms",
                "results",
                "quality",
                "match_types",
                "languages",
                "status",
                "warning_count",
                "index",
                "query",
                "schema_version",
            },
        ),
        (
            SessionEvent.from_snapshot(SessionStatistics().snapshot(), duration_seconds=1.0),
            {
                "duration_seconds",
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
            },
        ),
        (
            ErrorEvent(type="ValueError", frames=("app:main",), fingerprint="ab", handled=True),
            {"type", "frames", "fingerprint", "handled", "cause_types", "schema_version"},
        ),
        (HeartbeatEvent(uptime_seconds=1.0, beat=1), {"uptime_seconds", "beat", "schema_version"}),
    ],
    ids=["search", "session", "error", "heartbeat"],
)
def test_each_event_sends_exactly_its_declared_properties(event: Any, keys: set[str]) -> None:
    """to_posthog_event() gives the event's name and exactly the documented keys, with
    schema_version 1; optional properties are absent (not null) when unused."""
    name, props = event.to_posthog_event()
    assert name == event.EVENT_NAME
    assert set(props) == keys
    assert props["schema_version"] == 1
    assert type(event)._telemetry_strict is True


def test_events_are_frozen() -> None:
    """A built event cannot be changed after the fact."""
    event = search()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.intent = "other"  # type: ignore[misc]


def test_search_event_accepts_any_object_with_the_attributes() -> None:
    """A duck-typed response (the app's own model) works; missing attributes give zeros or
    nothing, never an error; relevance_score is read when score is absent."""
    duck = SimpleNamespace(
        candidates=3,
        matches=[SimpleNamespace(relevance_score=0.25, match_type=SearchStrategy.DENSE)],
        languages=("python",),
        status="success",
    )
    _, props = SearchEvent.from_response(duck, query=None, intent_type=None).to_posthog_event()
    assert props["results"] == {"candidates": 3, "returned": 1, "token_count": 0}
    assert props["quality"]["max"] == 0.25
    assert props["match_types"] == {"dense": 1}
    assert props["intent"] == "unknown"
    assert props["query"] == {"char_count": 0, "term_count": 0}
    _, empty = SearchEvent.from_response(None, query="x", intent_type="debug").to_posthog_event()
    assert empty["results"] == {"candidates": 0, "returned": 0, "token_count": 0}
    assert empty["quality"] == {"avg": None, "min": None, "max": None, "median": None}


def test_search_event_never_carries_the_query_by_default() -> None:
    """Without tools_over_privacy only the query's counts are sent."""
    query = f"mail {EMAIL} about /home/bob/x.py"
    _, props = search(query=query).to_posthog_event()
    assert props["query"] == {"char_count": len(query), "term_count": 4}
    assert "bob" not in json.dumps(props)


def test_query_text_is_scrubbed_then_cut_without_splitting_a_marker() -> None:
    """With tools_over_privacy the text is cut to 200 characters after the scrubber, and a
    cut that would fall inside a marker drops the marker's start instead."""
    query = "a" * 190 + " " + EMAIL + " tail"
    props = search(query=query, tools_over_privacy=True).serialize_for_telemetry(key_provider=KEYS)
    text = props["query"]["text"]
    assert len(text) <= QUERY_TEXT_CHARS
    assert EMAIL not in text
    assert "<ema" not in text or "<email>" in text
    assert _cut_text("x" * 195 + "<secret>", 200) == "x" * 195 + TRUNCATION_MARK
    assert _cut_text("x" * 150 + "<secret> " + "y" * 100, 200).startswith("x" * 150 + "<secret>")


def test_query_hash_is_keyed_and_stable() -> None:
    """query.hash is the same for the same query under one key, different under another."""
    a = search(tools_over_privacy=True).serialize_for_telemetry(key_provider=KEYS)
    b = search(tools_over_privacy=True).serialize_for_telemetry(key_provider=KEYS)
    other = search(tools_over_privacy=True).serialize_for_telemetry(
        key_provider=InMemoryKeyProvider(b"o" * 32)
    )
    assert a["query"]["hash"] == b["query"]["hash"] != other["query"]["hash"]


labels = st.one_of(
    st.text(max_size=300),
    st.builds(lambda name: f"{name}@example.com", st.from_regex(r"[a-z]{3,12}", fullmatch=True)),
    st.builds(lambda name: f"/home/{name}/project", st.from_regex(r"[a-z]{3,12}", fullmatch=True)),
)


@settings(max_examples=150, deadline=None)
@given(intent=labels, strategy=labels, status=labels, language=labels)
def test_app_labels_are_scrubbed_and_capped(
    intent: str, strategy: str, status: str, language: str
) -> None:
    """Strings that are not shipped enum members pass the scrubber and a 64-character cap,
    as values and as distribution keys."""
    response = SimpleNamespace(
        status=status, languages=[language], matches=[SimpleNamespace(score=1, match_type=intent)]
    )
    event = SearchEvent.from_response(
        response, query="q", intent_type=intent, strategies=[strategy]
    )
    props = event.serialize_for_telemetry(key_provider=KEYS)
    text = json.dumps(props)
    for raw in (intent, strategy, status, language):
        # Only the generated personal data: a bare "@example.com" is no address to scrub.
        if re.fullmatch(r"[a-z]{3,12}@example\.com|/home/[a-z]{3,12}/project", raw):
            assert raw not in text
    assert len(props["intent"]) <= MAX_LABEL_CHARS
    assert all(len(s) <= MAX_LABEL_CHARS for s in props["strategies"])
    assert len(props["status"]) <= MAX_LABEL_CHARS
    assert all(len(k) <= MAX_LABEL_CHARS for k in props["languages"])
    assert all(len(k) <= MAX_LABEL_CHARS for k in props["match_types"])


odd = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.one_of(st.none(), st.floats(), st.text(max_size=5)), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.builds(object),
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    candidates=odd,
    matches=odd,
    score=odd,
    languages=odd,
    query=odd,
    intent=odd,
    strategies=odd,
    elapsed=odd,
    coverage=odd,
)
def test_odd_input_never_raises_and_stays_json(
    candidates: Any,
    matches: Any,
    score: Any,
    languages: Any,
    query: Any,
    intent: Any,
    strategies: Any,
    elapsed: Any,
    coverage: Any,
) -> None:
    """Any values in any attribute still give a JSON-safe event with finite numbers."""
    response = SimpleNamespace(
        candidates=candidates,
        matches=[SimpleNamespace(score=score, match_type=intent)] if matches else matches,
        languages=languages,
        index_coverage=coverage,
        warnings=languages,
    )
    event = SearchEvent.from_response(
        response,
        query=query,
        intent_type=intent,
        strategies=strategies,
        execution_time_ms=elapsed,
    )
    props = event.serialize_for_telemetry(key_provider=KEYS)
    text = json.dumps(props, allow_nan=False)
    assert json.loads(text) == props
    for value in (props["execution_time_ms"], props["index"]["coverage"]):
        assert value is None or math.isfinite(value)


@settings(max_examples=50, deadline=None)
@given(query=odd, intent=odd, strategies=odd, elapsed=odd, flags=odd)
def test_capture_search_event_never_raises_into_the_caller(
    query: Any, intent: Any, strategies: Any, elapsed: Any, flags: Any
) -> None:
    """The client method swallows whatever the app passes."""
    with capture_events():
        get_telemetry_client().capture_search_event(
            object(), query, intent, strategies, elapsed, feature_flags=flags
        )


def test_shipped_events_work_through_both_capture_paths() -> None:
    """capture_from_event and capture_with_serialization send the same private payload."""
    event = search(query=f"contact {EMAIL}")
    with capture_events() as sink:
        client = get_telemetry_client()
        client.capture_from_event(event)
        client.capture_with_serialization(event.EVENT_NAME, event)
    first, second = sink.events()
    assert first["event"] == second["event"] == "codeweaver_search"
    strip = {k: v for k, v in first["properties"].items() if not k.startswith("$")}
    assert strip == {k: v for k, v in second["properties"].items() if not k.startswith("$")}
    assert EMAIL not in json.dumps(sink.events())


def test_session_event_counts_config_errors_by_type_only() -> None:
    """config_errors add their type names to setup.error_kinds, never the messages."""
    event = SessionEvent.from_snapshot(
        SessionStatistics().snapshot(),
        duration_seconds=-3,
        config_errors=[KeyError(EMAIL), ValueError, "MissingSetting"],
    )
    _, props = event.to_posthog_event()
    assert props["setup"]["error_kinds"] == {"KeyError": 1, "ValueError": 1, "MissingSetting": 1}
    assert props["duration_seconds"] == 0.0
    assert EMAIL not in json.dumps(props)


@settings(max_examples=200, deadline=None)
@given(
    words=st.integers(min_value=0, max_value=14),
    filler=st.from_regex(r"[a-z]{1,9}", fullmatch=True),
    secret=st.sampled_from(["alice.smith@example.com", "ghp_" + "A" * 36, "/home/alice/x.py"]),
)
def test_a_cut_label_never_keeps_a_fragment_of_a_secret(
    words: int, filler: str, secret: str
) -> None:
    """A long label is cut before the pipeline scrubs it; the cut drops the word it would
    split, so no half e-mail, token or path (which the scrubber would miss) goes out."""
    text = " ".join([filler] * words + [secret, "tail"])
    response = SimpleNamespace(status=text, languages=[text])
    event = SearchEvent.from_response(response, query="q", intent_type=text, strategies=[text])
    sent = json.dumps(event.serialize_for_telemetry(key_provider=KEYS))
    assert "alice" not in sent
    assert "AAAA" not in sent


def test_strings_smuggled_into_public_event_fields_are_scrubbed() -> None:
    """An app building ErrorEvent or HeartbeatEvent itself cannot send raw personal data
    through fields the library fills with numbers or hashes."""
    error = ErrorEvent(
        type="ValueError",
        frames=(),
        fingerprint="alice@example.com /home/alice/.ssh/id_rsa",
        handled="bob@example.com",  # type: ignore[arg-type]
    )
    beat = HeartbeatEvent(
        uptime_seconds="/home/alice",  # type: ignore[arg-type]
        beat=1,
        counters={"carol@example.com": 1},
    )
    sent = json.dumps([error.to_posthog_event(), beat.to_posthog_event()])
    for raw in ("alice@", "bob@", "carol@", "/home/alice"):
        assert raw not in sent


def test_the_query_is_fixed_at_capture_time() -> None:
    """A str subclass whose __str__ changes later cannot change what is sent."""
    state = {"text": "original query"}

    class Lazy(str):
        def __str__(self) -> str:
            return state["text"]

    with capture_events() as sink:
        client = get_telemetry_client()
        client.capture_search_event(
            SearchResponseSummary(), Lazy("typed query"), "debug", tools_over_privacy=True
        )
        state["text"] = "changed to alice@example.com"
    (event,) = sink.events()
    assert event["properties"]["query"]["text"] == "typed query"


def test_returned_defaults_to_every_match() -> None:
    """Without `returned`, the number of matches is sent, even beyond the 1000 the score
    summary reads."""
    many = SimpleNamespace(matches=[SimpleNamespace(score=0.5)] * 2500)
    _, props = SearchEvent.from_response(many, query="q", intent_type="x").to_posthog_event()
    assert props["results"]["returned"] == 2500
    assert props["quality"]["avg"] == 0.5


def test_both_capture_paths_hash_under_the_clients_key() -> None:
    """capture_from_event and capture_with_serialization give the same query.hash: the one
    of the capturing client's install key, not the process default."""
    event = search(query="same query", tools_over_privacy=True)
    with capture_events() as sink:
        client = get_telemetry_client()
        client.capture_from_event(event)
        client.capture_with_serialization(event.EVENT_NAME, event)
        client.capture_search_event(
            SearchResponseSummary(), "same query", "debug", tools_over_privacy=True
        )
    hashes = {e["properties"]["query"]["hash"] for e in sink.events()}
    assert len(hashes) == 1
    assert hashes != {event.serialize_for_telemetry()["query"]["hash"]}


@pytest.mark.parametrize(
    "config_errors",
    ["ConfigError", KeyError("x"), KeyError, ["ConfigError"]],
    ids=["str", "exception", "class", "list"],
)
def test_config_errors_accept_one_item_or_many(config_errors: Any) -> None:
    """A single kind name, exception or class counts as one error kind, as a list does."""
    with capture_events() as sink:
        client = get_telemetry_client()
        client.start_session()
        client.capture_session_event(config_errors=config_errors)
    (event,) = sink.events()
    kinds = event["properties"]["setup"]["error_kinds"]
    assert list(kinds.values()) == [1]
    assert next(iter(kinds)) in {"ConfigError", "KeyError"}


def test_capture_session_event_outside_a_session_needs_statistics() -> None:
    """Outside a session, capture_session_event sends the given statistics, and nothing
    (no hollow session event) without them."""
    stats = SessionStatistics()
    stats.record_request(ok=True)
    with capture_events() as sink:
        client = get_telemetry_client()
        client.capture_session_event(version="1")
        client.capture_session_event(stats, version="2")
    (event,) = sink.events()
    assert event["properties"]["version"] == "2"
    assert event["properties"]["requests"]["total"] == 1


def test_any_real_number_is_read_as_a_number() -> None:
    """Decimal, Fraction (and numpy scalars, being numbers.Real) count like int and float;
    a number too large for a float is left out instead of failing the event."""
    from decimal import Decimal
    from fractions import Fraction

    response = SimpleNamespace(
        candidates=Decimal(50),
        token_count=10**400,
        matches=[SimpleNamespace(score=Fraction(1, 4)), SimpleNamespace(score=Decimal("0.75"))],
    )
    event = SearchEvent.from_response(
        response, query="q", intent_type="x", execution_time_ms=Fraction(25, 2)
    )
    _, props = event.to_posthog_event()
    assert props["results"] == {"candidates": 50, "returned": 2, "token_count": 0}
    assert props["quality"]["avg"] == 0.5
    assert props["execution_time_ms"] == 12.5


def test_statistics_given_by_the_app_are_copied_at_capture() -> None:
    """An app's own statistics object whose snapshot shares its maps: changing them after
    capture_session_event does not change what is sent."""
    shared: dict[str, Any] = {"searches": {"total": 1, "by_intent": {"find": 1}}}

    class AppStats:
        def snapshot(self) -> dict[str, Any]:
            return shared

    with capture_events(batch_interval_seconds=60) as sink:
        client = get_telemetry_client()
        client.capture_session_event(AppStats(), version="1")  # type: ignore[arg-type]
        shared["searches"]["by_intent"]["find"] = 99
        shared["searches"]["by_intent"]["alice@example.com"] = 1
        client.flush(5)
    (event,) = sink.events()
    assert event["properties"]["searches"]["by_intent"] == {"find": 1}
