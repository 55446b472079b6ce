"""Tests of tests/receiver.py, driving the real ``posthog.Client`` against it.

Every client uses short timeouts and few retries, and is shut down through a
bounded helper, so a misbehaving receiver cannot stall the suite.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from posthog.client import Client
from posthog.request import APIError, batch_post

from tests.receiver import (
    CAPTURE,
    CAPTURE_V1,
    DEFINITIONS,
    FLAGS,
    Fault,
    FlagsShape,
    PostHogReceiver,
    make_receiver,
    refusing_url,
)

API_KEY = "phc_test"
SECRET_KEY = "phx_receiver_test_secret"
FLAG_VALUES: dict[str, bool | str] = {"new_reranker": "test", "beta": True, "off": False}
FLAG_PAYLOADS = {"new_reranker": {"top_k": 5}, "beta": ["a", "b"]}


@pytest.fixture
def receiver() -> Iterator[PostHogReceiver]:
    with make_receiver() as r:
        yield r


class ErrorSink:
    """An ``on_error`` callback that records failures and signals the first one."""

    def __init__(self) -> None:
        self.errors: list[tuple[Exception, list[Any]]] = []
        self.called = threading.Event()

    def __call__(self, error: Exception, batch: list[Any]) -> None:
        self.errors.append((error, batch))
        self.called.set()


def shutdown_within(client: Client, seconds: float) -> None:
    """Run ``client.shutdown()`` on a daemon thread and fail if it takes too long."""
    worker = threading.Thread(target=client.shutdown, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"client.shutdown() took more than {seconds}s"


@contextlib.contextmanager
def posthog_client(receiver_url: str, **overrides: Any) -> Iterator[Client]:
    options: dict[str, Any] = {
        "host": receiver_url,
        "timeout": 2,
        "max_retries": 0,
        "flush_interval": 0.1,
        "feature_flags_request_timeout_seconds": 2,
        "feature_flags_request_max_retries": 0,
        "poll_interval": 300,
    }
    options.update(overrides)
    client = Client(API_KEY, **options)
    try:
        yield client
    finally:
        shutdown_within(client, 5.0)


def refused(error: BaseException) -> bool:
    """Whether ``error`` (a requests exception) was caused by ECONNREFUSED."""
    pending: list[Any] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        if isinstance(current, BaseException):
            pending.extend([*current.args, current.__cause__, current.__context__])
            pending.append(getattr(current, "reason", None))
    return False


# ---------------------------------------------------------------------------
# Capture
# ---------------------------------------------------------------------------


def test_sync_capture_arrives_as_plain_json(receiver: PostHogReceiver) -> None:
    with posthog_client(receiver.url, sync_mode=True) as client:
        client.capture("tool_used", distinct_id="install-1", properties={"n": 3})

    [request] = receiver.capture_requests()
    assert request.method == "POST"
    assert request.path == "/batch/"
    assert "content-encoding" not in request.headers
    assert not request.gzipped
    assert request.json_body["api_key"] == API_KEY
    assert "sent_at" in request.json_body
    [event] = receiver.events()
    assert event["event"] == "tool_used"
    assert event["distinct_id"] == "install-1"
    assert event["properties"]["n"] == 3
    assert event["properties"]["$lib"] == "posthog-python"
    assert event["properties"]["$geoip_disable"] is True


def test_async_gzip_capture_arrives_decoded(receiver: PostHogReceiver) -> None:
    with posthog_client(receiver.url, gzip=True, flush_at=10) as client:
        for index in range(3):
            client.capture("step", distinct_id="install-1", properties={"i": index})
        client.flush(timeout_seconds=5)
        events = receiver.wait_for_events(3)

    assert [e["properties"]["i"] for e in events] == [0, 1, 2]
    assert receiver.events_named("step") == events
    request = receiver.capture_requests()[0]
    assert request.headers["content-encoding"] == "gzip"
    assert request.gzipped
    assert request.decode_error is None
    assert '"step"' in receiver.raw_bodies()[0]


def test_capture_v1_protocol_is_understood(receiver: PostHogReceiver) -> None:
    with posthog_client(receiver.url, sync_mode=True, capture_mode="v1") as client:
        client.capture("v1_event", distinct_id="install-1")

    [request] = receiver.requests(CAPTURE_V1)
    assert request.path == "/i/v1/analytics/events"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert "api_key" not in request.json_body
    assert request.accepted
    assert [e["event"] for e in receiver.events()] == ["v1_event"]


# ---------------------------------------------------------------------------
# Remote flags
# ---------------------------------------------------------------------------


def test_all_flags_and_payloads_in_one_remote_request(receiver: PostHogReceiver) -> None:
    receiver.set_flags(FLAG_VALUES, payloads=FLAG_PAYLOADS)
    with posthog_client(receiver.url, sync_mode=True) as client:
        result = client.get_all_flags_and_payloads("install-1")

    assert result["featureFlags"] == FLAG_VALUES
    # This getter returns payloads still JSON-encoded.
    assert result["featureFlagPayloads"] == {
        "new_reranker": json.dumps(FLAG_PAYLOADS["new_reranker"]),
        "beta": json.dumps(FLAG_PAYLOADS["beta"]),
    }
    [request] = receiver.flag_requests()
    assert request.path == "/flags/"
    assert request.query["v"] == ["4"]
    body = request.json_body
    assert body["api_key"] == API_KEY
    assert body["distinct_id"] == "install-1"
    assert body["geoip_disable"] is True
    assert "flag_keys_to_evaluate" not in body
    assert receiver.events() == []  # no $feature_flag_called from this getter


@pytest.mark.parametrize("shape", ["v4", "v2", "legacy"])
def test_every_flags_answer_shape_is_read_by_the_client(
    receiver: PostHogReceiver, shape: FlagsShape
) -> None:
    receiver.set_flags(FLAG_VALUES, payloads=FLAG_PAYLOADS)
    receiver.set_flags_shape(shape)
    with posthog_client(receiver.url, sync_mode=True) as client:
        result = client.get_all_flags_and_payloads("install-1")

    assert result["featureFlags"] == FLAG_VALUES
    payloads = result["featureFlagPayloads"]
    assert payloads is not None
    assert json.loads(payloads["new_reranker"]) == {"top_k": 5}


def test_single_flag_lookup_returns_variant_and_decoded_payload(
    receiver: PostHogReceiver,
) -> None:
    receiver.set_flags(FLAG_VALUES, payloads=FLAG_PAYLOADS)
    with posthog_client(receiver.url, sync_mode=True) as client:
        quiet = client.get_feature_flag_result(
            "new_reranker", "install-1", send_feature_flag_events=False
        )
        assert quiet is not None
        assert quiet.variant == "test"
        assert quiet.payload == {"top_k": 5}
        assert receiver.flag_requests()[0].json_body["flag_keys_to_evaluate"] == ["new_reranker"]
        assert receiver.events() == []

        loud = client.get_feature_flag_result("beta", "install-1")
        assert loud is not None
        assert loud.enabled is True

    [called] = receiver.events_named("$feature_flag_called")
    assert called["properties"]["$feature_flag"] == "beta"
    assert called["properties"]["$feature_flag_response"] is True


def test_flag_keys_to_evaluate_is_honoured(receiver: PostHogReceiver) -> None:
    receiver.set_flags(FLAG_VALUES)
    with posthog_client(receiver.url, sync_mode=True) as client:
        decision = client.get_flags_decision("install-1", flag_keys_to_evaluate=["beta"])
    assert set(decision["flags"]) == {"beta"}


# ---------------------------------------------------------------------------
# Local evaluation
# ---------------------------------------------------------------------------


def test_local_evaluation_uses_definitions_and_never_calls_flags(
    receiver: PostHogReceiver,
) -> None:
    receiver.set_flags(FLAG_VALUES, payloads=FLAG_PAYLOADS)
    with posthog_client(receiver.url, sync_mode=True, secret_key=SECRET_KEY) as client:
        reranker = client.get_feature_flag_result(
            "new_reranker", "install-1", only_evaluate_locally=True, send_feature_flag_events=False
        )
        everything = client.get_all_flags_and_payloads("install-1", only_evaluate_locally=True)
        # A second fetch revalidates with the ETag.
        client.load_feature_flags()  # type: ignore[no-untyped-call]

    assert reranker is not None
    assert reranker.variant == "test"
    assert reranker.payload == {"top_k": 5}
    assert everything["featureFlags"] == FLAG_VALUES
    assert receiver.flag_requests() == []

    first, second = receiver.definition_requests()
    assert first.path == "/flags/definitions"
    assert first.query["token"] == [API_KEY]
    assert first.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert first.response_status == 200
    assert second.headers["if-none-match"]
    assert second.response_status == 304
    assert all(SECRET_KEY not in body for body in receiver.raw_bodies())


def test_explicit_definitions_are_served(receiver: PostHogReceiver) -> None:
    receiver.set_definitions(
        [
            {
                "id": 7,
                "key": "nobody",
                "active": True,
                "filters": {"groups": [{"properties": [], "rollout_percentage": 0}]},
            }
        ]
    )
    with posthog_client(receiver.url, sync_mode=True, secret_key=SECRET_KEY) as client:
        result = client.get_feature_flag_result(
            "nobody", "install-1", only_evaluate_locally=True, send_feature_flag_events=False
        )
    assert result is not None
    assert result.enabled is False
    assert receiver.requests("/api/feature_flag/local_evaluation/") == []
    assert len(receiver.requests(DEFINITIONS)) == 1


# ---------------------------------------------------------------------------
# Failure modes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault.status(500), Fault.status(429, retry_after=0.1), Fault.drop()],
    ids=["500", "429-retry-after", "drop"],
)
def test_transient_capture_failure_is_retried_then_delivered(
    receiver: PostHogReceiver, fault: Fault
) -> None:
    receiver.fail_next(1, fault, route=CAPTURE)
    with posthog_client(receiver.url, max_retries=1) as client:
        client.capture("retried", distinct_id="install-1")
        client.flush(timeout_seconds=5)
        receiver.wait_for_events(1)

    first, second = receiver.capture_requests()
    assert first.fault == fault
    assert not first.accepted
    assert second.fault is None
    assert second.accepted
    assert first.events()[0]["uuid"] == second.events()[0]["uuid"]
    # The client backs off 2**0 = 1s before its first retry (Retry-After is a minimum).
    assert second.received_at - first.received_at >= 0.9


def test_persistent_500_exhausts_retries_and_reports(receiver: PostHogReceiver) -> None:
    receiver.status(500, route=CAPTURE)
    sink = ErrorSink()
    with posthog_client(receiver.url, max_retries=1, on_error=sink) as client:
        client.capture("doomed", distinct_id="install-1")
        client.flush(timeout_seconds=5)
        assert sink.called.wait(5)

    [(error, batch)] = sink.errors
    assert isinstance(error, APIError)
    assert error.status == 500
    assert [e["event"] for e in batch] == ["doomed"]
    assert [r.response_status for r in receiver.capture_requests()] == [500, 500]
    assert receiver.events() == []
    assert len(receiver.events(include_rejected=True)) == 2


def test_413_is_not_retried(receiver: PostHogReceiver) -> None:
    receiver.status(413, route="/batch/")
    sink = ErrorSink()
    with posthog_client(receiver.url, max_retries=3, on_error=sink) as client:
        client.capture("too_big", distinct_id="install-1")
        client.flush(timeout_seconds=5)
        assert sink.called.wait(5)

    assert isinstance(sink.errors[0][0], APIError)
    assert sink.errors[0][0].status == 413
    assert len(receiver.capture_requests()) == 1


def test_hanging_capture_times_out_on_the_client(receiver: PostHogReceiver) -> None:
    receiver.hang(route=CAPTURE)
    sink = ErrorSink()
    started = time.monotonic()
    with posthog_client(receiver.url, timeout=0.3, on_error=sink) as client:
        client.capture("stuck", distinct_id="install-1")
        client.flush(timeout_seconds=5)
        assert sink.called.wait(5)
    assert time.monotonic() - started < 3

    assert isinstance(sink.errors[0][0], requests.Timeout)
    [request] = receiver.capture_requests()
    assert request.response_status is None
    assert request.events()[0]["event"] == "stuck"


def test_hanging_flags_request_returns_none_quickly(receiver: PostHogReceiver) -> None:
    receiver.set_flags(FLAG_VALUES)
    receiver.hang(route=FLAGS)
    with posthog_client(
        receiver.url, sync_mode=True, feature_flags_request_timeout_seconds=0.3
    ) as client:
        started = time.monotonic()
        result = client.get_feature_flag_result("beta", "install-1", send_feature_flag_events=False)
        elapsed = time.monotonic() - started

    assert result is None
    assert elapsed < 2
    assert len(receiver.flag_requests()) == 1


def test_flags_502_is_retried_once(receiver: PostHogReceiver) -> None:
    receiver.set_flags(FLAG_VALUES)
    receiver.fail_next(1, Fault.status(502), route=FLAGS)
    with posthog_client(receiver.url, sync_mode=True, feature_flags_request_max_retries=1) as c:
        result = c.get_feature_flag_result("beta", "install-1", send_feature_flag_events=False)
    assert result is not None
    assert result.enabled is True
    assert [r.response_status for r in receiver.flag_requests()] == [502, 200]


def test_fail_next_is_consumed_then_the_receiver_recovers(receiver: PostHogReceiver) -> None:
    receiver.set_flags(FLAG_VALUES)
    receiver.fail_next(2, Fault.status(500), route=FLAGS)
    with posthog_client(receiver.url, sync_mode=True) as client:
        decisions = [client.get_flags_decision("install-1") for _ in range(3)]

    assert [set(d["flags"]) for d in decisions] == [set(), set(), set(FLAG_VALUES)]
    assert [r.response_status for r in receiver.flag_requests()] == [500, 500, 200]


def test_refusing_url_gives_connection_refused() -> None:
    with refusing_url() as url:
        with pytest.raises(requests.ConnectionError) as caught:
            batch_post(API_KEY, url, timeout=1, batch=[])
        assert refused(caught.value)

        sink = ErrorSink()
        with posthog_client(url, on_error=sink) as client:
            client.capture("lost", distinct_id="install-1")
            client.flush(timeout_seconds=5)
            assert sink.called.wait(5)
            assert client.get_feature_flag_result("beta", "install-1") is None
        assert refused(sink.errors[0][0])


def test_refuse_and_accept_at_runtime(receiver: PostHogReceiver) -> None:
    receiver.refuse()
    assert receiver.refusing
    with pytest.raises(requests.ConnectionError) as caught:
        batch_post(API_KEY, receiver.url, timeout=1, batch=[])
    assert refused(caught.value)

    receiver.accept()
    assert batch_post(API_KEY, receiver.url, timeout=1, batch=[]).status_code == 200
    assert len(receiver.requests()) == 1


def test_slow_answers_arrive_late_or_time_out(receiver: PostHogReceiver) -> None:
    receiver.slow(0.4, route=CAPTURE)
    started = time.monotonic()
    assert batch_post(API_KEY, receiver.url, timeout=3, batch=[]).status_code == 200
    assert time.monotonic() - started >= 0.4

    receiver.slow(1.0, route=CAPTURE)
    with pytest.raises(requests.Timeout):
        batch_post(API_KEY, receiver.url, timeout=0.2, batch=[])


def test_malformed_flags_answer_reads_as_no_flags(receiver: PostHogReceiver) -> None:
    receiver.set_flags(FLAG_VALUES)
    receiver.malformed(route=FLAGS)
    with posthog_client(receiver.url, sync_mode=True) as client:
        result = client.get_feature_flag_result("beta", "install-1", send_feature_flag_events=False)
    assert result is None
    [request] = receiver.flag_requests()
    assert request.response_status == 200

    # Capture answers are not parsed by the client, so a malformed 200 still "succeeds".
    receiver.malformed(route=CAPTURE)
    assert batch_post(API_KEY, receiver.url, timeout=1, batch=[]).status_code == 200


def test_path_fault_wins_over_route_and_heal_clears(receiver: PostHogReceiver) -> None:
    receiver.status(503)  # everything
    receiver.status(404, route=CAPTURE)
    receiver.set_fault(None, route="/batch/")
    receiver.status(418, route="/batch")
    with pytest.raises(APIError) as caught:
        batch_post(API_KEY, receiver.url, timeout=1, batch=[])
    assert caught.value.status == 418

    receiver.heal()
    assert batch_post(API_KEY, receiver.url, timeout=1, batch=[]).status_code == 200


# ---------------------------------------------------------------------------
# Receiver housekeeping
# ---------------------------------------------------------------------------


def test_stop_returns_quickly_with_a_hanging_request() -> None:
    receiver = make_receiver()
    receiver.hang()
    outcome: list[BaseException] = []

    def post() -> None:
        try:
            batch_post(API_KEY, receiver.url, timeout=30, batch=[])
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=post, daemon=True)
    worker.start()
    receiver.wait_for_requests(1)

    started = time.monotonic()
    receiver.stop()
    assert time.monotonic() - started < 1
    worker.join(2)
    assert not worker.is_alive()
    assert isinstance(outcome[0], requests.ConnectionError)


def test_wait_for_events_times_out(receiver: PostHogReceiver) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        receiver.wait_for_events(1, timeout=0.1)
    assert time.monotonic() - started < 1


def test_clear_forgets_requests_and_transcript_covers_headers(
    receiver: PostHogReceiver,
) -> None:
    batch_post(API_KEY, receiver.url, gzip=True, timeout=1, batch=[{"event": "x"}])
    assert receiver.raw_bodies()[0].startswith("{")
    assert "POST /batch/" in receiver.transcript()
    assert "user-agent: posthog-python/" in receiver.transcript()

    receiver.clear()
    assert receiver.requests() == []
    assert receiver.events() == []
