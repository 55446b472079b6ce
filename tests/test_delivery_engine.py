"""Zero loss under bursts and outages, on the loopback receiver and real child processes.

- a burst far larger than the queue arrives whole;
- an outage: what one process could not send, the next process on a healthy host sends,
  each event exactly once;
- a spool at its cap drops its oldest events and counts them;
- a process killed (SIGKILL) in the middle of draining loses nothing that was not yet
  acknowledged, and the next run sends again only what was in flight (same uuids).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from codeweaver_telemetry import Event, TelemetryClient
from codeweaver_telemetry._spool import SPOOL_DIR, Spool
from tests.helpers import wait_until
from tests.receiver import CAPTURE, FLAGS, PostHogReceiver

ROOT = Path(__file__).resolve().parents[1]
KEY = "phc_engine"


def wire(make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver, **kw: object):
    return make_client(posthog_api_key=KEY, posthog_host=receiver.url, **kw)


def child_env(home: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEWEAVER") and k != "CI"}
    env.update(
        {
            "CODEWEAVER_HOME": str(home),
            "CODEWEAVER__TELEMETRY__ENABLED": "1",
            "CODEWEAVER__TELEMETRY__POSTHOG_API_KEY": KEY,
            "CODEWEAVER__TELEMETRY__POSTHOG_HOST": url,
            "PYTHONPATH": str(ROOT),
        },
        **extra,
    )
    return env


def _down(client: TelemetryClient) -> bool:
    """The client's host state says down (read through its internals: no public view)."""
    worker = getattr(client._running, "_worker", None)
    delivery = getattr(worker, "_delivery", None)
    return getattr(getattr(delivery, "host", None), "down_since", None) is not None


def accepted_uuids(receiver: PostHogReceiver) -> list[str]:
    return [e["uuid"] for e in receiver.events()]


def test_a_burst_of_50000_captures_arrives_whole(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """50,000 captures in a tight loop (50 times the queue): every one arrives, once."""
    client = wire(make_client, receiver)
    for i in range(50_000):
        client.capture("burst", {"i": i})
    events = receiver.wait_for_events(50_000, timeout=180)
    assert len(events) == 50_000
    assert len({e["uuid"] for e in events}) == 50_000
    assert sorted(e["properties"]["i"] for e in events) == list(range(50_000))
    assert client.stats()["dropped"] == {}


OUTAGE_CHILD = textwrap.dedent(
    """
    import sys
    from codeweaver_telemetry import get_telemetry_client

    client = get_telemetry_client()
    assert client.enabled, client.state
    for i in range(int(sys.argv[1])):
        client.capture("outage", {"i": i})
    client.shutdown()
    stats = client.stats()
    print("STATS", stats["dropped"], stats["pending"], flush=True)
    """
)


def test_an_outage_is_sent_by_the_next_process_each_event_once(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver, clean_env: Path
) -> None:
    """100,000 captures while the host refuses connections, in a process that then ends;
    the next process on the healthy host delivers all of them, each exactly once."""
    n = 100_000
    receiver.refuse()
    done = subprocess.run(
        [sys.executable, "-c", OUTAGE_CHILD, str(n)],
        env=child_env(clean_env, receiver.url),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "STATS {} 0" in done.stdout, done.stdout  # nothing dropped, nothing left behind
    receiver.accept()
    wire(make_client, receiver)
    events = receiver.wait_for_events(n, timeout=240)
    time.sleep(0.5)  # anything sent twice would arrive now
    events = receiver.events()
    assert len(events) == n
    assert sorted(e["properties"]["i"] for e in events) == list(range(n))


def test_a_full_spool_drops_its_oldest_events_and_counts_them(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """With the host down and a small SPOOL_MAX_BYTES, the newest events are kept, the
    oldest dropped (by segment), and every event is either kept or counted as spool_full."""
    receiver.refuse()
    client = wire(make_client, receiver, spool_max_bytes=300_000, request_timeout_seconds=1.0)
    n = 20_000
    for i in range(n):
        client.capture("kept", {"i": i, "f": i * 1.000001})
    client.shutdown(timeout=5)
    stats = client.stats()
    directory = client.settings.resolved_state_dir / SPOOL_DIR
    assert sum(p.stat().st_size for p in directory.iterdir()) <= 300_000
    tag = next(directory.glob("spool-*")).name.split("-")[1]
    kept = sorted(e.properties["i"] for e in Spool(directory, tag=tag).load())
    dropped = stats["dropped"]
    assert set(dropped) == {"spool_full"}, dropped
    assert len(kept) + dropped["spool_full"] == n
    assert kept[-1] == n - 1, "the newest event is kept"
    # Eviction goes by segment (1,000 events), oldest first; events still kept for retry at
    # exit are spooled with the newest, so a few old ones may ride along.
    newest = range(n - len(kept) - 1000, n)
    assert sum(i in newest for i in kept) >= 0.75 * len(kept), "mostly the newest are kept"


DRAIN_CHILD = textwrap.dedent(
    """
    import time
    from codeweaver_telemetry import get_telemetry_client

    client = get_telemetry_client()  # drains the spool from its start
    assert client.enabled, client.state
    print("READY", flush=True)
    time.sleep(120)
    """
)


def test_a_kill_while_draining_loses_nothing_and_resends_only_what_was_in_flight(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver, clean_env: Path
) -> None:
    """5 spooled segments; the host answers slowly; the draining process is killed with
    SIGKILL while its third request is in flight. The next run delivers every event; the
    only events that arrive twice are the ones of that third request."""
    first = wire(make_client, receiver)
    first.shutdown()
    install_id = first.distinct_id
    assert install_id is not None
    directory = first.settings.resolved_state_dir / SPOOL_DIR
    from codeweaver_telemetry._startup import spool_tag

    spool = Spool(directory, tag=spool_tag(first.settings, None))
    for segment in range(5):
        batch = [
            Event("spooled", {"i": segment * 1000 + i}, time.time(), str(uuid.uuid4()), install_id)
            for i in range(1000)
        ]
        assert spool.save(batch) == 1000
    receiver.clear()
    receiver.slow(1.0, route=CAPTURE)
    child = subprocess.Popen(
        [sys.executable, "-c", DRAIN_CHILD],
        env=child_env(clean_env, receiver.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        receiver.wait_for_requests(3, route=CAPTURE, timeout=60)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=30)
    in_flight = {e["uuid"] for e in receiver.requests(route=CAPTURE)[2].events()}
    assert len(in_flight) == 1000
    receiver.heal()
    wire(make_client, receiver)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(set(accepted_uuids(receiver))) < 5000:
        time.sleep(0.05)
    time.sleep(0.5)  # anything sent twice would arrive now
    arrived = collections.Counter(accepted_uuids(receiver))
    assert len(arrived) == 5000, "every spooled event is delivered"
    twice = {u for u, count in arrived.items() if count > 1}
    assert twice <= in_flight, "only the request in flight at the kill is sent again"
    assert all(count <= 2 for count in arrived.values())


@pytest.mark.parametrize("max_bytes", ["0"])
def test_no_spool_means_a_full_queue_refuses_and_counts(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver, max_bytes: str
) -> None:
    """SPOOL_MAX_BYTES=0 turns the spool off: a full queue refuses the newest events and
    counts them (the memory stays bounded)."""
    receiver.refuse()
    client = wire(make_client, receiver, spool_max_bytes=int(max_bytes), max_queue_size=100)
    for i in range(1000):
        client.capture("x", {"i": i})
    assert client.stats()["dropped"].get("queue_full", 0) >= 800
    assert not (client.settings.resolved_state_dir / SPOOL_DIR).exists()


# -- one host, one rate limit: events and flags ---------------------------------------------------
def test_a_retry_after_on_batch_pauses_flag_fetches_too(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """The host answers /batch/ with 429 and Retry-After: 2. Until then no /flags/ request
    is made either (a lookup gets its default at once); afterwards flags arrive."""
    receiver.set_flags({"exp": "b"})
    receiver.status(429, retry_after=2, route=CAPTURE)
    client = wire(make_client, receiver, flag_timeout_seconds=0.3)
    client.capture("x")
    client.flush(1.0)
    receiver.wait_for_requests(1, route=CAPTURE)
    paused_at = time.monotonic()
    assert client.get_feature_flag("exp", "default") == "default"
    receiver.heal()
    assert wait_until(lambda: client.get_feature_flag("exp", "default") == "b", timeout=15)
    [first] = receiver.flag_requests()[:1]
    assert first.received_at >= paused_at + 2.0 - 0.1, "no /flags/ request inside the pause"


def test_a_retry_after_on_flags_pauses_event_delivery(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """/flags/ answers 429 with Retry-After: 2: no /batch/ request goes before it ends."""
    receiver.status(429, retry_after=2, route=FLAGS)
    client = wire(make_client, receiver, flag_timeout_seconds=1.0)
    assert client.get_feature_flag("exp", "default") == "default"
    [answered] = receiver.flag_requests()[:1]
    client.capture("after_429")
    client.flush(0.5)
    receiver.wait_for_events(1, timeout=10)
    [sent] = receiver.capture_requests()[:1]
    assert sent.received_at >= answered.received_at + 2.0 - 0.1


def test_flags_are_not_fetched_while_the_host_does_not_answer_events(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """After /batch/ failed (the host is down), a flag lookup makes no request and returns
    its default at once; when events are delivered again, flags are fetched again."""
    receiver.set_flags({"exp": "b"})
    receiver.status(503, route=CAPTURE)
    client = wire(make_client, receiver, flag_timeout_seconds=0.5)
    client.capture("x")
    client.flush(1.0)
    # Down once the retry has failed too (after the 1 s back-off): one failure is a blip.
    receiver.wait_for_requests(2, route=CAPTURE, timeout=10)
    assert wait_until(lambda: _down(client))
    started = time.monotonic()
    assert client.get_feature_flag("exp", "default") == "default"
    assert time.monotonic() - started < 0.5, "no wait for a request that is not made"
    assert receiver.flag_requests() == []
    receiver.heal()
    assert client.flush(5.0)
    client.refresh_feature_flags()
    assert wait_until(lambda: client.get_feature_flag("exp", "default") == "b", timeout=20)
