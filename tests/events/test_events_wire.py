"""Shipped events end to end: the real client and posthog package, HTTP to the loopback receiver.

Every assertion is on what arrived on the wire.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from codeweaver_telemetry import (
    IntentType,
    MatchSummary,
    SearchResponseSummary,
    SearchStrategy,
    SessionStatistics,
    TelemetryClient,
)
from tests.helpers import wait_until
from tests.receiver import PostHogReceiver

API_KEY = "phc_eventsWireKey0123456789"
EMAIL = "alice@example.com"
TOKEN = "ghp_" + "Q" * 36
HOME_PATH = "/home/alice/acme/secret_module.py"
CODE = "def authenticate(user, password):"
PERSON_KEYS = ("$set", "$set_once", "$unset", "$anon_distinct_id", "$groups", "$group_set", "$ip")


@pytest.fixture
def wire(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> Callable[..., TelemetryClient]:
    def build(**kw: Any) -> TelemetryClient:
        values: dict[str, Any] = {
            "posthog_api_key": API_KEY,
            "posthog_host": receiver.url,
            "request_timeout_seconds": 1.0,
            "max_queue_size": 5000,
        }
        values.update(kw)
        return make_client(**values)

    return build


def response(index: int) -> SearchResponseSummary:
    """A varied search result whose fields would leak if sent raw (paths, code)."""
    scores = [0.95 - 0.1 * k - 0.01 * index for k in range(1 + index % 4)]
    return SearchResponseSummary(
        candidates=40 + index,
        token_count=500 + 10 * index,
        matches=[
            MatchSummary(score=s, match_type=("semantic", "keyword", "symbol")[k % 3])
            for k, s in enumerate(scores)
        ],
        languages=[("python", "rust", "go")[index % 3], "python"],
        status="success" if index % 5 else "partial",
        warnings=[f"slow shard {HOME_PATH}"] if index % 5 == 0 else [],
        index_state="ready" if index % 2 else "indexing",
        index_coverage=0.5 + index / 40,
    )


INTENTS = list(IntentType)
STRATEGIES = [[SearchStrategy.HYBRID], [SearchStrategy.DENSE, SearchStrategy.RERANK], ["bm25"]]


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def numbers_in(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from numbers_in(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numbers_in(v, f"{path}[{i}]")


def raise_value_error() -> None:
    raise ValueError(f"cannot open {HOME_PATH} for {EMAIL}")


def raise_key_error() -> None:
    raise KeyError(TOKEN)


def run_realistic_session(client: TelemetryClient, receiver: PostHogReceiver) -> dict[str, Any]:
    """20 searches, requests, 2 errors, timers, usage, tokens, 3 languages, one failover."""
    receiver.set_flags({"new_reranker": "test"})
    client.start_session({"version": "0.5.0"})
    assert client.get_feature_flag("new_reranker") == "test"
    client.record_setup(True, attempts=2, error_kinds=[TimeoutError("boom /home/alice")])
    latencies: list[float] = []
    for i in range(20):
        latency = 5.0 + 7.3 * i
        latencies.append(latency)
        client.capture_search_event(
            response(i),
            f"how does {EMAIL} log in with {TOKEN} in {HOME_PATH} {CODE}",
            INTENTS[i % len(INTENTS)],
            STRATEGIES[i % 3],
            latency,
        )
        client.record_request(ok=i % 7 != 0, latency_ms=latency + 1)
    for thrower in (raise_value_error, raise_key_error):
        try:
            thrower()
        except Exception as exc:
            client.capture_error(exc)
    with client.timer("index"):
        time.sleep(0.002)
    with client.timer("index"):
        time.sleep(0.004)
    client.record_usage("find_code", 3)
    client.record_usage("reindex")
    client.record_tokens(generated=1200, delivered=900, saved=300)
    client.record_languages(["python", "rust", "go", "python"])
    client.record_failover(2.5)
    time.sleep(0.01)
    client.end_session()
    receiver.wait_for_events(20 + 2 + 1 + 1, timeout=10)  # with the flag exposure
    return {"latencies": latencies}


def test_realistic_session_arrives_exact_and_private(
    wire: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """The session event and all 20 search events arrive; every number of the session event
    is non-zero and equals what was recorded; nothing personal is on the wire."""
    client = wire()
    recorded = run_realistic_session(client, receiver)
    searches = receiver.events_named("codeweaver_search")
    (session,) = receiver.events_named("codeweaver_session")
    errors = receiver.events_named("codeweaver_error")
    assert len(searches) == 20
    assert len(errors) == 2
    props = session["properties"]

    zeros = [path for path, number in numbers_in(props) if number == 0]
    assert zeros == [], f"session properties that are zero: {zeros}"
    assert props["schema_version"] == 1
    assert props["duration_seconds"] > 0
    assert props["setup"] == {"success": True, "attempts": 2, "error_kinds": {"TimeoutError": 1}}
    assert props["requests"] == {
        "total": 20,
        "successful": 17,
        "failed": 3,
        "success_rate": 0.85,
    }
    searched = props["searches"]
    assert searched["total"] == 20
    assert sum(searched["by_intent"].values()) == 20
    assert searched["by_intent"]["understand"] == 3  # i = 0, 7, 14
    assert searched["by_strategy"] == {"hybrid": 7, "dense": 7, "rerank": 7, "bm25": 6}
    latency = searched["latency_ms"]
    values = recorded["latencies"]
    assert latency["min"] == pytest.approx(min(values))
    assert latency["max"] == pytest.approx(max(values))
    assert latency["avg"] == pytest.approx(sum(values) / 20, abs=1e-3)
    for key, q in (("p50", 0.5), ("p95", 0.95)):  # the documented error: 1% relative
        assert latency[key] == pytest.approx(nearest_rank(values, q), rel=0.0101)
    assert props["tokens"] == {"generated": 1200, "delivered": 900, "saved": 300}
    assert props["languages"] == {"python": 2, "rust": 1, "go": 1}
    assert props["failover"] == {"count": 1, "seconds": 2.5}
    assert props["usage"] == {"find_code": 3, "reindex": 1}
    assert props["timings"]["index"]["count"] == 2
    assert props["timings"]["index"]["min"] >= 2.0
    assert props["timings"]["request"]["count"] == 20
    fingerprints = {e["properties"]["fingerprint"] for e in errors}
    assert props["errors"] == dict.fromkeys(fingerprints, 1)
    assert props["$feature/new_reranker"] == "test"
    assert props["version"] == "0.5.0"

    wire_text = json.dumps(receiver.events())
    for secret in (EMAIL, TOKEN, HOME_PATH, "/home/alice", CODE, "password", "log in", "boom"):
        assert secret not in wire_text, secret
    for event in searches:
        query = event["properties"]["query"]
        assert set(query) == {"char_count", "term_count"}
        assert query["char_count"] > 0
        assert event["properties"]["$feature/new_reranker"] == "test"
    types = sorted(e["properties"]["type"] for e in errors)
    assert types == ["KeyError", "ValueError"]
    for error in errors:
        assert "message" not in error["properties"]
        assert error["properties"]["handled"] is True
        frames = error["properties"]["frames"]
        assert any(frame.endswith((":raise_value_error", ":raise_key_error")) for frame in frames)
        assert all("/" not in frame for frame in frames)


def test_search_event_properties_follow_the_response(
    wire: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """Counts, the score summary, distributions, status, warnings and index state."""
    client = wire()
    client.capture_search_event(
        response(5), "find the parser", IntentType.DEBUG, [SearchStrategy.HYBRID], 12.345
    )
    client.flush(5)
    (event,) = receiver.wait_for_events(1)
    props = event["properties"]
    assert event["event"] == "codeweaver_search"
    assert props["intent"] == "debug"
    assert props["strategies"] == ["hybrid"]
    assert props["execution_time_ms"] == 12.345
    assert props["results"] == {"candidates": 45, "returned": 2, "token_count": 550}
    assert props["quality"] == {"avg": 0.85, "min": 0.8, "max": 0.9, "median": 0.85}
    assert props["match_types"] == {"semantic": 1, "keyword": 1}
    assert props["languages"] == {"go": 1, "python": 1}
    assert props["status"] == "partial"
    assert props["warning_count"] == 1
    assert props["index"] == {"state": "ready", "coverage": 0.625}
    assert props["query"] == {"char_count": 15, "term_count": 3}
    assert props["schema_version"] == 1


@pytest.mark.parametrize(
    ("setting", "argument", "expect_text"),
    [
        (None, None, False),
        (None, True, True),
        (True, None, True),
        (True, False, False),
        (False, True, False),
    ],
    ids=["off", "argument-on", "setting-on", "argument-off-over-setting", "user-no-wins"],
)
def test_tools_over_privacy_adds_only_scrubbed_query_text_and_hash(
    wire: Callable[..., TelemetryClient],
    receiver: PostHogReceiver,
    setting: bool | None,
    argument: bool | None,
    expect_text: bool,
) -> None:
    """With tools_over_privacy the query arrives scrubbed (markers for the email and the
    token) with a keyed hash; without it, only counts. Nothing else is added either way. The
    argument beats the setting, except a "no" the user set explicitly."""
    client = wire() if setting is None else wire(tools_over_privacy=setting)
    query = f"why does {EMAIL} fail with token {TOKEN} " + "x" * 300
    client.capture_search_event(
        response(1), query, "understand", ["hybrid"], 3.0, tools_over_privacy=argument
    )
    client.flush(5)
    (event,) = receiver.wait_for_events(1)
    props = event["properties"]
    expected_keys = {"char_count", "term_count"} | ({"text", "hash"} if expect_text else set())
    assert set(props["query"]) == expected_keys
    wire_text = json.dumps(event)
    assert EMAIL not in wire_text
    assert TOKEN not in wire_text
    if expect_text:
        text = props["query"]["text"]
        assert "<email>" in text
        assert re.search(r"<\w+>", text.split("token", 1)[1]), text
        assert len(text) <= 200
        assert re.fullmatch(r"[0-9a-f]{16}", props["query"]["hash"])
    other = {k for k in props if not k.startswith("$")} - {"query"}
    assert other == {
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
        "schema_version",
    }


def test_no_event_touches_a_person_profile(
    wire: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """No shipped event carries $set, $set_once or any other person or group property, and
    each says $process_person_profile: false."""
    client = wire()
    client._start_heartbeat(0.05)
    run_realistic_session(client, receiver)
    wait_until(lambda: receiver.events_named("codeweaver_heartbeat"), timeout=5)
    stats = SessionStatistics()
    stats.record_request(ok=True)
    client.capture_session_event(stats, version="1.0")  # a standalone one, no session
    client.flush(5)
    names = {e["event"] for e in receiver.events()}
    assert names >= {
        "codeweaver_search",
        "codeweaver_session",
        "codeweaver_error",
        "codeweaver_heartbeat",
    }
    for event in receiver.events():
        for key in PERSON_KEYS:
            assert key not in event, (event["event"], key)
            assert key not in event["properties"], (event["event"], key)
        assert event["properties"]["$process_person_profile"] is False


def test_eight_threads_recording_at_once_count_exactly(
    wire: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """8 threads capturing searches and recording requests, usage and timers: every count in
    the session event is exact, and every search event arrives."""
    client = wire(batch_size=100)
    client.start_session()
    per_thread = 40
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            client.capture_search_event(response(i), "q", IntentType.TEST, ["dense"], 1.0 + i)
            client.record_request(ok=i % 2 == 0, latency_ms=2.0)
            client.record_usage(f"feature_{n % 2}")
            with client.timer("step"):
                pass

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.end_session()
    receiver.wait_for_events(8 * per_thread + 1, timeout=15)
    (session,) = receiver.events_named("codeweaver_session")
    props = session["properties"]
    total = 8 * per_thread
    assert props["searches"]["total"] == total
    assert props["searches"]["by_intent"] == {"test": total}
    assert props["searches"]["by_strategy"] == {"dense": total}
    assert props["requests"]["total"] == total
    assert props["requests"]["successful"] == total // 2
    assert props["usage"] == {"feature_0": total // 2, "feature_1": total // 2}
    assert props["timings"]["step"]["count"] == total
    assert len(receiver.events_named("codeweaver_search")) == total


def test_session_event_is_sent_once_when_the_with_block_raises(
    wire: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """Leaving the with block by an exception sends the session event at once (before any
    end_session or shutdown), and the exception reaches the caller unchanged."""
    client = wire()

    def run_app() -> None:
        with client:
            client.start_session()
            client.record_usage("before_failure")
            raise RuntimeError("host failure")

    with pytest.raises(RuntimeError, match="host failure"):
        run_app()
    assert client.session_id is None, "the block ended the session"
    (session,) = receiver.wait_for_events(1)
    assert session["event"] == "codeweaver_session"
    assert session["properties"]["usage"] == {"before_failure": 1}
    client.end_session()
    client.shutdown(timeout=2)
    assert len(receiver.events_named("codeweaver_session")) == 1


def test_capture_session_event_ends_the_session_once(
    wire: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """capture_session_event in a session is that session's one event, with the given facts
    over the recorded ones; ending the session afterwards sends nothing more."""
    client = wire()
    client.start_session()
    client.record_setup(False, attempts=1)
    client.record_request(ok=True)
    client.capture_session_event(
        version="2.1.0",
        setup_success=True,
        setup_attempts=3,
        config_errors=[ValueError(f"bad {HOME_PATH}"), "MissingKey"],
        duration_seconds=42.0,
    )
    client.end_session()
    client.shutdown(timeout=2)
    (session,) = receiver.wait_for_events(1)
    props = session["properties"]
    assert props["version"] == "2.1.0"
    assert props["duration_seconds"] == 42.0
    assert props["setup"] == {
        "success": True,
        "attempts": 3,
        "error_kinds": {"ValueError": 1, "MissingKey": 1},
    }
    assert props["requests"]["total"] == 1
    assert HOME_PATH not in json.dumps(session)
    assert len(receiver.events_named("codeweaver_session")) == 1


def test_given_feature_flags_replace_the_session_flags_on_a_search(
    wire: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """feature_flags given to capture_search_event become its $feature/ properties (scrubbed);
    without them, the session's looked-up flags are used."""
    receiver.set_flags({"new_reranker": "test"})
    client = wire()
    client.start_session()
    assert client.get_feature_flag("new_reranker") == "test"
    client.capture_search_event(response(1), "q", "debug", [], 1.0)
    client.capture_search_event(
        response(1), "q", "debug", [], 1.0, feature_flags={"ranker": "control", EMAIL: True}
    )
    client.flush(5)
    receiver.wait_for_events(3)  # the two searches and the flag's exposure
    first, second = receiver.events_named("codeweaver_search")
    assert first["properties"]["$feature/new_reranker"] == "test"
    flags = {k: v for k, v in second["properties"].items() if k.startswith("$feature/")}
    assert flags == {"$feature/ranker": "control", "$feature/<email>": True}


def test_preview_is_the_session_event_as_it_will_be_sent(
    wire: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """preview() returns the post-pipeline session event without sending it; the event sent
    at the end matches it except for uuid, timestamp and the duration."""
    client = wire()
    assert client.preview() is None, "no session, nothing to preview"
    client.start_session({"version": "0.5.0"})
    client.record_request(ok=True, latency_ms=3.0)
    client.record_usage("find_code")
    preview = client.preview()
    assert preview is not None
    assert preview["event"] == "codeweaver_session"
    client.flush(2)
    assert receiver.events() == [], "preview sends nothing"
    client.end_session()
    (sent,) = receiver.wait_for_events(1)
    for payload in (preview["properties"], sent["properties"]):
        payload.pop("duration_seconds")
    assert preview["properties"] == sent["properties"]
    assert preview["distinct_id"] == sent["distinct_id"]


def test_heartbeat_sends_uptime_and_counters_then_stops_on_shutdown(
    wire: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A heartbeat event per interval carries uptime and the session's counters so far; the
    thread is a daemon and ends on shutdown."""
    client = wire()
    client.start_session()
    client.record_request(ok=True)
    client.capture_search_event(response(1), "q", "debug", [], 1.0)
    client._start_heartbeat(0.05)
    beats = wait_until(lambda: len(receiver.events_named("codeweaver_heartbeat")) >= 2, timeout=5)
    assert beats
    beat = receiver.events_named("codeweaver_heartbeat")[0]["properties"]
    assert beat["uptime_seconds"] > 0
    assert beat["beat"] == 1
    assert beat["counters"] == {"requests": 1, "searches": 1, "errors": 0, "failovers": 0}
    assert beat["session_seconds"] > 0
    heartbeat = client._heartbeat
    assert heartbeat is not None
    assert heartbeat._thread is not None
    assert heartbeat._thread.daemon
    client.shutdown(timeout=2)
    assert wait_until(lambda: not heartbeat.running, timeout=2)


def test_heartbeat_stops_after_consecutive_failures_with_one_line(
    wire: Callable[..., TelemetryClient],
    receiver: PostHogReceiver,
    telemetry_logs: pytest.LogCaptureFixture,
) -> None:
    """With the host refusing, the heartbeat gives up after 3 failing beats, with one log
    line, and the client carries on."""
    receiver.refuse()
    client = wire(batch_interval_seconds=0.02)
    client._start_heartbeat(0.1)
    heartbeat = client._heartbeat
    assert heartbeat is not None
    assert wait_until(lambda: not heartbeat.running, timeout=10)
    assert heartbeat.stopped_by_failures
    lines = [r for r in telemetry_logs.records if "heartbeat stopped" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert client.enabled


def test_heartbeat_setting_below_a_minute_turns_telemetry_off(
    telemetry_logs: pytest.LogCaptureFixture,
) -> None:
    """heartbeat_interval_seconds must be at least 60: a smaller value is one clear warning
    naming the setting, and telemetry stays off."""
    client = TelemetryClient.from_options(enabled=True, heartbeat_interval_seconds=5)
    try:
        assert not client.enabled
        assert "heartbeat_interval_seconds (given in code)" in telemetry_logs.text
        assert client.decision.reason.count("codeweaver_telemetry") == 0
    finally:
        client.shutdown(timeout=0.5)


def test_heartbeat_setting_starts_a_daemon_thread(
    wire: Callable[..., TelemetryClient],
) -> None:
    """A valid heartbeat_interval_seconds starts the heartbeat thread; none by default."""
    assert wire()._heartbeat is None
    client = wire(heartbeat_interval_seconds=60)
    heartbeat = client._heartbeat
    assert heartbeat is not None
    assert heartbeat.running
    client.shutdown(timeout=1)
    assert wait_until(lambda: not heartbeat.running, timeout=2)


@pytest.mark.parametrize("off_by", ["DO_NOT_TRACK", "CI", "disable_telemetry"])
def test_nothing_reaches_the_wire_when_off(
    receiver: PostHogReceiver,
    monkeypatch: pytest.MonkeyPatch,
    off_by: str,
) -> None:
    """A whole realistic session on a client that is off sends zero events, records
    nothing and makes no request, whatever turned it off."""
    options: dict[str, Any] = {
        "enabled": True,
        "posthog_api_key": API_KEY,
        "posthog_host": receiver.url,
    }
    if off_by == "disable_telemetry":
        options["disable_telemetry"] = True
    else:
        monkeypatch.setenv(off_by, "1")
    client = TelemetryClient.from_options(**options)
    assert not client.enabled
    client.start_session({"version": "0.5.0"})
    for i in range(5):
        client.capture_search_event(response(i), "q", "debug", ["dense"], 1.0)
        client.record_request(ok=True)
    client.capture_session_event(version="1")
    client.end_session()
    assert client.statistics is None
    assert client.preview() is None
    client.shutdown(timeout=1)
    time.sleep(0.2)
    assert receiver.requests() == []
