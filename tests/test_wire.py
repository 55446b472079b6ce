"""End to end: a real client, the real posthog package, real HTTP to a loopback receiver.

Every assertion is on what arrived on the wire (decoded request bodies).
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from codeweaver_telemetry import (
    AnonymityConversion,
    BasedModel,
    FilteredKey,
    TelemetryClient,
)
from codeweaver_telemetry.sinks.jsonl import read_log
from tests.helpers import wait_until
from tests.receiver import CAPTURE, FLAGS, Fault, PostHogReceiver

API_KEY = "phc_wireTestKey0123456789"
SECRET_TOKEN = "ghp_" + "Z" * 36


def wire_client(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver, **kw: Any
) -> TelemetryClient:
    values: dict[str, Any] = {
        "posthog_api_key": API_KEY,
        "posthog_host": receiver.url,
        "request_timeout_seconds": 1.0,
    }
    values.update(kw)
    return make_client(**values)


class Repo(BasedModel):
    name: str
    path: str
    files: list[str]

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {
            FilteredKey("path"): AnonymityConversion.HASH,
            FilteredKey("files"): AnonymityConversion.COUNT,
        }


def test_events_arrive_with_identity_and_privacy_properties(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """Events reach /batch/ with the install id, the session id and no person profile."""
    client = wire_client(make_client, receiver)
    session = client.start_session({"version": "0.5.0", "backend": "qdrant"})
    client.capture("codeweaver_search", {"intent": "UNDERSTAND", "results": {"returned": 10}})
    assert client.flush(5)
    (event,) = receiver.wait_for_events(1)
    assert event["event"] == "codeweaver_search"
    assert event["distinct_id"] == client.distinct_id
    props = event["properties"]
    assert props["intent"] == "UNDERSTAND"
    assert props["results"] == {"returned": 10}
    assert props["version"] == "0.5.0", "session metadata is attached to every event"
    assert props["$session_id"] == session
    assert props["$process_person_profile"] is False
    assert props["$geoip_disable"] is True
    for forbidden in ("$ip", "$set", "$set_once", "$groups"):
        assert forbidden not in props
    (request,) = receiver.capture_requests()
    assert request.gzipped, "batches are sent gzip-compressed"


def test_distinct_id_is_stable_across_clients_sharing_state(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """Two clients (two runs) with one state directory send the same distinct_id."""
    first = wire_client(make_client, receiver)
    first.capture("run", {"n": 1})
    first.shutdown(timeout=5)
    second = wire_client(make_client, receiver)
    second.capture("run", {"n": 2})
    second.shutdown(timeout=5)
    events = receiver.wait_for_events(2)
    assert {e["distinct_id"] for e in events} == {first.distinct_id}
    assert first.distinct_id == second.distinct_id


def test_nothing_personal_reaches_the_wire(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver, clean_env: Path
) -> None:
    """No home path, user name, hostname, secret or API key (outside api_key) in any request."""
    home = str(Path.home())
    user = getpass.getuser()
    host = socket.gethostname()
    client = wire_client(make_client, receiver)
    client.start_session({"cwd": str(Path.cwd()), "user": f"{user}@{host}.example.com"})
    client.capture(
        "oops",
        {
            "message": f"failed to open {home}/.ssh/id_rsa for {user}@example.com",
            "env": {"GITHUB_TOKEN": SECRET_TOKEN, "api_key": API_KEY},
            "cmd": f"curl -H 'Authorization: Bearer {SECRET_TOKEN}' http://10.1.2.3/x",
            "where": str(clean_env),
        },
    )
    client.capture_with_serialization(
        "repo", Repo(name="private-repo", path=f"{home}/work/private-repo", files=["a", "b"])
    )
    client.get_feature_flag("anything")
    client.end_session()
    receiver.wait_for_events(3)
    bodies = []
    for request in receiver.requests():
        assert request.text.count(API_KEY) <= 1, "the key appears only in its own field"
        body = request.json_body
        if isinstance(body, dict):
            stripped = {k: v for k, v in body.items() if k not in ("api_key", "token")}
            bodies.append(json.dumps(stripped))
        else:
            bodies.append(request.text)
        bodies.append(request.target)
    everything = "\n".join(bodies)
    assert API_KEY not in "".join(json.dumps(e) for e in receiver.events())
    for needle in (home, str(clean_env), SECRET_TOKEN, "10.1.2.3", "/.ssh/"):
        assert needle not in everything, needle
    if len(user) >= 3:
        assert f"{user}@" not in everything
    assert host not in everything
    repo = receiver.events_named("repo")[0]["properties"]
    assert repo["files"] == 2
    assert len(repo["path"]) == 16
    assert "private-repo" in repo["name"], "unruled, harmless strings pass unchanged"


def test_local_audit_log_records_what_posthog_accepted(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """With a key, the local log holds the same payloads PostHog accepted, and no API key."""
    client = wire_client(make_client, receiver)
    client.capture("logged", {"n": 1})
    assert client.flush(5)
    logged = list(read_log(client.settings.resolved_state_dir))
    assert [e["event"] for e in logged] == ["logged"]
    assert logged[0]["properties"] == receiver.events()[0]["properties"]
    log_text = (client.settings.resolved_state_dir / "events.jsonl").read_text()
    assert API_KEY not in log_text


def test_server_errors_are_retried_until_delivered(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A 500 and a 429 keep the events; they are delivered exactly once after recovery."""
    receiver.fail_next(1, Fault.status(500), route=CAPTURE)
    receiver.fail_next(1, Fault.status(429, retry_after=1), route=CAPTURE)
    client = wire_client(make_client, receiver)
    for i in range(3):
        client.capture("retry_me", {"i": i})
    assert client.flush(5) is False, "the first attempt fails"
    assert client.flush(5) is False, "so does the second"
    assert client.flush(5) is True
    events = receiver.events()
    assert sorted(e["properties"]["i"] for e in events) == [0, 1, 2]
    assert len(receiver.capture_requests()) == 3


def test_413_for_a_single_event_drops_it_without_retrying(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """One event the host refuses as too large is dropped and counted, not retried forever."""
    receiver.fail_next(1, Fault.status(413), route=CAPTURE)
    client = wire_client(make_client, receiver)
    client.capture("too_big", {})
    assert client.flush(5) is True
    assert client.stats()["dropped"] == {"too_large": 1}
    client.capture("after", {})
    assert client.flush(5)
    assert [e["event"] for e in receiver.events()] == ["after"]


@pytest.mark.parametrize("fault", ["hang", "malformed", "refuse", "drop"])
def test_broken_host_never_harms_the_caller(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver, fault: str
) -> None:
    """With the host hanging, refusing or answering garbage, calls return and flush is bounded."""
    if fault == "refuse":
        receiver.refuse()
    else:
        getattr(receiver, fault)()
    client = wire_client(make_client, receiver, request_timeout_seconds=0.5)
    client.start_session({"v": 1})
    for i in range(50):
        client.capture("e", {"i": i})
    assert client.get_feature_flag("x", default="fallback") == "fallback"
    assert client.flush(0.3) in (True, False)
    client.shutdown(timeout=0.3)
    client.capture("after_shutdown", {})  # a quiet no-op


def test_flags_are_fetched_once_cached_and_attached(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """One /flags/ request per session; lookups are cached; looked-up flags tag events."""
    receiver.set_flags({"new_reranker": "test", "beta": True, "off": False})
    client = wire_client(make_client, receiver)
    client.start_session()
    assert client.get_feature_flag("new_reranker") == "test"
    assert client.get_feature_flag("beta") is True
    assert client.get_feature_flag("off") is False
    assert client.get_feature_flag("missing", default="d") == "d"
    assert client.get_all_feature_flags() == {"new_reranker": "test", "beta": True, "off": False}
    assert len(receiver.flag_requests()) == 1
    body = receiver.flag_requests()[0].json_body
    assert body["distinct_id"] == client.distinct_id
    assert body.get("geoip_disable") is True
    client.capture("tagged", {})
    assert client.flush(5)
    props = receiver.events_named("tagged")[0]["properties"]
    assert props["$feature/new_reranker"] == "test"
    assert props["$feature/beta"] is True


def test_first_flag_lookup_waits_at_most_the_budget(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A slow /flags/ answer gives the default first, then the real value once it arrives."""
    receiver.set_flags({"exp": "variant_b"})
    receiver.slow(0.5, route=FLAGS)
    client = wire_client(make_client, receiver, flag_timeout_seconds=0.1)
    assert client.get_feature_flag("exp", default="control") == "control"
    receiver.wait_for_requests(1, route=FLAGS)
    assert wait_until(lambda: client.get_feature_flag("exp") == "variant_b"), "never arrived"


def test_flag_errors_give_the_default(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A failing /flags/ endpoint never raises; lookups return the caller's default."""
    receiver.status(500, route=FLAGS)
    client = wire_client(make_client, receiver)
    assert client.get_feature_flag("exp", default=False) is False
    assert client.get_all_feature_flags() == {}


def test_local_evaluation_uses_definitions_not_flags_requests(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """With a feature-flags secret key, flags are evaluated locally from the definitions."""
    receiver.set_flags({"local_flag": True, "mv": "blue"})
    client = wire_client(
        make_client, receiver, posthog_personal_api_key="phs_secret", flag_timeout_seconds=5
    )
    assert client.get_feature_flag("local_flag") is True
    assert client.get_feature_flag("mv") == "blue"
    assert receiver.definition_requests(), "definitions were fetched"
    assert receiver.flag_requests() == [], "no remote /flags/ evaluation"


def test_disabled_client_makes_no_requests(receiver: PostHogReceiver) -> None:
    """Telemetry off (opt-in, nothing enabled): no request of any kind, nothing written."""
    from codeweaver_telemetry import TelemetrySettings

    client = TelemetryClient(TelemetrySettings(posthog_api_key=API_KEY, posthog_host=receiver.url))
    assert not client.enabled
    client.start_session({"v": 1})
    client.capture("nope", {})
    assert client.get_feature_flag("x", default=1) == 1
    client.shutdown()
    assert receiver.requests() == []
    assert not client.settings.resolved_state_dir.exists()


def test_413_splits_the_batch_until_it_fits(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A 413 for a batch sends it again in halves; every event arrives exactly once."""
    receiver.fail_next(1, Fault.status(413), route=CAPTURE)
    client = wire_client(make_client, receiver)
    for i in range(4):
        client.capture("half", {"i": i})
    assert client.flush(5)
    assert sorted(e["properties"]["i"] for e in receiver.events()) == [0, 1, 2, 3]
    assert [len(r.events()) for r in receiver.capture_requests()] == [4, 2, 2]
    assert client.stats()["dropped"] == {}


def test_each_session_fetches_flags_once(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """Flags are fetched once per session: a new session asks again, lookups never do."""
    receiver.set_flags({"exp": "a"})
    client = wire_client(make_client, receiver)
    client.start_session()
    assert client.get_feature_flag("exp") == "a"
    client.get_feature_flag("exp")
    client.end_session()
    receiver.set_flags({"exp": "b"})
    client.start_session()
    receiver.wait_for_requests(2, route=FLAGS)
    assert wait_until(lambda: client.get_feature_flag("exp") == "b")
    assert len(receiver.flag_requests()) == 2


def test_retry_after_is_honoured(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """After a 429 with Retry-After: 2, the worker waits 2 s (not its 1 s back-off) to retry."""
    receiver.fail_next(1, Fault.status(429, retry_after=2), route=CAPTURE)
    client = wire_client(make_client, receiver)
    client.capture("later", {})
    first, second = receiver.wait_for_requests(2, route=CAPTURE, timeout=10)
    assert second.received_at - first.received_at >= 1.8
    assert [e["event"] for e in receiver.events()] == ["later"]


# -- PostHog contract: exposures, timestamps, uuids, refresh ----------------------------------
def test_reading_a_flag_sends_one_exposure_per_flag_per_session(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """`$feature_flag_called` (what PostHog experiments count) goes out once per flag and
    session when the app reads a flag, with the flag and its response, and no person data."""
    receiver.set_flags({"exp": "test", "beta": True})
    client = wire_client(make_client, receiver)
    session_id = client.start_session()
    for _ in range(3):
        assert client.get_feature_flag("exp") == "test"
    assert client.get_feature_flag("beta") is True
    assert client.get_feature_flag("missing", default="d") == "d"
    client.get_all_feature_flags()  # reading them all is no exposure
    client.end_session()
    client.start_session()
    client.get_feature_flag("exp")  # a new session: a new exposure
    assert client.flush(5)
    called = receiver.events_named("$feature_flag_called")
    assert [e["properties"]["$feature_flag"] for e in called] == ["exp", "beta", "exp"]
    first = called[0]["properties"]
    assert first["$feature_flag_response"] == "test"
    assert first["$feature/exp"] == "test"
    assert first["$session_id"] == session_id
    assert called[1]["properties"]["$feature_flag_response"] is True
    assert called[0]["distinct_id"] == client.distinct_id
    assert not any(k in first for k in ("$set", "$set_once", "$person_properties"))
    assert first["$process_person_profile"] is False
    from codeweaver_telemetry._types import LIBRARY_KEYS

    for event in receiver.events():  # the spool holds payloads to this same vocabulary
        for key in event["properties"]:
            assert not key.startswith("$") or key in LIBRARY_KEYS or key.startswith("$feature/")


def test_exposure_events_can_be_turned_off(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """With send_feature_flag_events off, reading flags sends no exposure event."""
    receiver.set_flags({"exp": "test"})
    client = wire_client(make_client, receiver, send_feature_flag_events=False)
    client.start_session()
    assert client.get_feature_flag("exp") == "test"
    client.capture("work", {})
    assert client.flush(5)
    assert [e["event"] for e in receiver.events()] == ["work"]


def test_capture_takes_an_aware_timestamp_and_returns_the_uuid(
    make_client: Callable[..., TelemetryClient],
    receiver: PostHogReceiver,
    telemetry_logs: pytest.LogCaptureFixture,
) -> None:
    """An aware timestamp is sent in UTC; a naive one is refused (capture time, a warning);
    capture() returns the uuid the event carries on the wire."""
    import datetime as dt

    client = wire_client(make_client, receiver)
    when = dt.datetime(2026, 3, 1, 12, 30, 15, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    past = client.capture("past", {}, timestamp=when)
    naive = client.capture("naive", {}, timestamp=dt.datetime(2001, 1, 1))
    plain = client.capture("plain", {})
    assert client.flush(5)
    by_name = {e["event"]: e for e in receiver.events()}
    assert by_name["past"]["uuid"] == past
    assert by_name["naive"]["uuid"] == naive
    assert by_name["plain"]["uuid"] == plain
    assert len({past, naive, plain}) == 3
    sent_at = dt.datetime.fromisoformat(by_name["past"]["timestamp"])
    assert sent_at == when
    assert sent_at.utcoffset() == dt.timedelta(0), "sent in UTC"
    naive_at = dt.datetime.fromisoformat(by_name["naive"]["timestamp"])
    assert naive_at.year >= 2026, "the naive timestamp was not used"
    assert any("naive" in r.getMessage() for r in telemetry_logs.records)


def test_refresh_feature_flags_sees_a_change_within_the_session(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """refresh_feature_flags() fetches again now, without waiting; lookups then see it."""
    receiver.set_flags({"exp": "a"})
    client = wire_client(make_client, receiver)
    client.start_session()
    assert client.get_feature_flag("exp") == "a"
    receiver.set_flags({"exp": "b"})
    assert client.get_feature_flag("exp") == "a", "cached within the session"
    client.refresh_feature_flags()
    assert wait_until(lambda: client.get_feature_flag("exp") == "b")
    assert len(receiver.flag_requests()) == 2
