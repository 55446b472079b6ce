# SPDX-License-Identifier: MIT OR Apache-2.0
"""The flag cache against the loopback receiver, through the real posthog request code:
transient failures are retried (within the first lookup's budget, then in the background),
others are not, and refresh() refetches now. What a client fetched is kept in flags.json, and
`codeweaver-telemetry flags` shows it (with `--refresh`, its one request)."""

from __future__ import annotations

import io
import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from codeweaver_telemetry import TelemetryClient, TelemetrySettings, flags
from codeweaver_telemetry.cli import EXIT_FAILURE, EXIT_OK, main
from codeweaver_telemetry.flags import (
    FLAGS_FILE,
    FlagCache,
    FlagFetchError,
    FlagFile,
    FlagSourceClosed,
    PostHogFlags,
    read_flag_file,
)
from codeweaver_telemetry.state import StateStore
from tests.helpers import SLACK_S, wait_until
from tests.receiver import FLAGS, Fault, PostHogReceiver, refusing_url

API_KEY = "phc_flagsTestKey0123456789"

#: The budget of the first lookup when the settings do not say otherwise.
DEFAULT_BUDGET_S: float = TelemetrySettings.model_fields["flag_timeout_seconds"].default
#: How late a lookup may come back on a busy machine, beyond its budget.

MakeCache = Callable[..., tuple[FlagCache, PostHogFlags]]


@pytest.fixture
def make_cache(receiver: PostHogReceiver) -> Iterator[MakeCache]:
    """Build caches over a real PostHogFlags aimed at the receiver.

    At the end the sources are shut down and every cache woken, so no retry outlives the
    test (nor logs into another one).
    """
    made: list[tuple[FlagCache, PostHogFlags]] = []

    def factory(
        *,
        budget_s: float = DEFAULT_BUDGET_S,
        refresh_s: float = 600.0,
        timeout_s: float = 1.0,
        host: str | None = None,
    ) -> tuple[FlagCache, PostHogFlags]:
        source = PostHogFlags(
            api_key=API_KEY,
            host=host or receiver.url,
            distinct_id="install-1",
            timeout_s=timeout_s,
        )
        cache = FlagCache(source, budget_s=budget_s, refresh_s=refresh_s)
        made.append((cache, source))
        return cache, source

    yield factory
    receiver.heal()
    for cache, source in made:
        source.shutdown()
        cache.refresh()  # wakes a retry sleeping in its back-off: it ends at once
    for cache, _ in made:
        assert wait_until(lambda cache=cache: not cache._fetching, 5.0), "a fetch outlived its test"
        cache.close()


def _timed_get(cache: FlagCache, key: str) -> tuple[Any, float]:
    started = time.monotonic()
    value = cache.get(key)
    return value, time.monotonic() - started


# -- classification --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "transient"),
    [
        (Fault.status(500), True),
        (Fault.status(502), True),
        (Fault.status(503), True),
        (Fault.status(504), True),
        (Fault.status(408), True),
        (Fault.status(429, retry_after=1), True),
        (Fault.drop(), True),
        (Fault.status(400), False),
        (Fault.status(401), False),
        (Fault.status(403), False),
        (Fault.status(404), False),
        (Fault.malformed(), False),
    ],
    ids=lambda v: f"{v.kind}{v.code}" if isinstance(v, Fault) else str(v),
)
def test_fetch_failures_are_classified(
    receiver: PostHogReceiver, make_cache: MakeCache, fault: Fault, transient: bool
) -> None:
    """PostHogFlags says which failures are worth retrying: 5xx, 408, 429 and network
    errors are; other statuses and a malformed answer are not."""
    receiver.set_fault(fault, route=FLAGS)
    _, source = make_cache()
    with pytest.raises(FlagFetchError) as caught:
        source()
    assert caught.value.transient is transient
    assert len(receiver.flag_requests()) == 1, "posthog itself does not retry (max_retries=0)"


def test_timeouts_and_refused_connections_are_transient(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """A request that times out and a refused connection are worth retrying."""
    receiver.hang(route=FLAGS)
    _, hanging = make_cache(timeout_s=0.2)
    with pytest.raises(FlagFetchError) as caught:
        hanging()
    assert caught.value.transient
    with refusing_url() as url:
        _, refused = make_cache(host=url)
        with pytest.raises(FlagFetchError) as caught:
            refused()
    assert caught.value.transient


def test_quota_limited_answer_is_not_transient(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """A 200 that says the flags quota is used up is a final answer, not a retry."""
    receiver.set_flags({"exp": "b"}, quota_limited=True)
    _, source = make_cache()
    with pytest.raises(FlagFetchError) as caught:
        source()
    assert not caught.value.transient


def test_a_shut_down_source_sends_nothing(receiver: PostHogReceiver, make_cache: MakeCache) -> None:
    """After shutdown the source raises FlagSourceClosed without a request."""
    _, source = make_cache()
    source.shutdown()
    with pytest.raises(FlagSourceClosed):
        source()
    assert receiver.flag_requests() == []


# -- retries within the first lookup's budget ---------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault.status(502), Fault.status(504), Fault.status(429), Fault.drop()],
    ids=["502", "504", "429", "dropped"],
)
def test_first_lookup_gets_the_value_after_one_transient_failure(
    receiver: PostHogReceiver, make_cache: MakeCache, fault: Fault
) -> None:
    """One 502, 504, 429 or dropped connection is retried within the default budget: the
    first lookup returns the real value, not the default."""
    receiver.set_flags({"exp": "variant_b"})
    receiver.fail_next(1, fault, route=FLAGS)
    cache, _ = make_cache()
    value, took = _timed_get(cache, "exp")
    assert value == "variant_b"
    assert took <= DEFAULT_BUDGET_S + SLACK_S
    requests = receiver.flag_requests()
    assert len(requests) == 2
    assert requests[0].fault == fault
    assert requests[1].accepted


def test_client_lookup_gets_the_value_after_one_502(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """End to end: a client's first flag lookup survives one 502 from /flags/."""
    receiver.set_flags({"exp": "variant_b"})
    receiver.fail_next(1, Fault.status(502), route=FLAGS)
    client = make_client(
        posthog_api_key=API_KEY, posthog_host=receiver.url, request_timeout_seconds=1.0
    )
    assert client.get_feature_flag("exp", default="control") == "variant_b"
    assert len(receiver.flag_requests()) == 2


@pytest.mark.parametrize(
    "fault",
    [Fault.status(401), Fault.status(403), Fault.status(400), Fault.malformed()],
    ids=["401", "403", "400", "malformed"],
)
def test_final_failures_are_not_retried(
    receiver: PostHogReceiver, make_cache: MakeCache, fault: Fault
) -> None:
    """A 401 (403, 400, malformed answer) is not retried: one request, and the first
    lookup gives up at once instead of waiting out its budget."""
    receiver.set_flags({"exp": "variant_b"})
    receiver.set_fault(fault, route=FLAGS)
    cache, _ = make_cache(budget_s=2.0)
    value, took = _timed_get(cache, "exp")
    assert value is None
    assert took < 1.0, "a final failure wakes the waiting lookup"
    time.sleep(0.3)  # room for a retry, were there one
    assert len(receiver.flag_requests()) == 1
    # Later lookups are inside the failed-fetch back-off: still no request.
    assert cache.get("exp") is None
    assert len(receiver.flag_requests()) == 1


def test_lookup_never_waits_beyond_the_budget(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """With the host hanging, the first lookup returns the default after its budget."""
    receiver.hang(route=FLAGS)
    cache, _ = make_cache(budget_s=0.2, timeout_s=0.5)
    value, took = _timed_get(cache, "exp")
    assert value is None
    assert 0.15 <= took <= 0.2 + SLACK_S


# -- retries in the background -----------------------------------------------------------------


def test_value_arrives_in_the_background_once_the_host_recovers(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """With the host failing past the budget, the lookup gets the default; the same fetch
    keeps retrying in the background, and once the host recovers the value is there
    without another lookup having waited for it."""
    receiver.set_flags({"exp": "variant_b"})
    receiver.status(502, route=FLAGS)
    cache, _ = make_cache()
    value, took = _timed_get(cache, "exp")
    assert value is None
    assert took <= DEFAULT_BUDGET_S + SLACK_S
    assert len(receiver.flag_requests()) >= 2, "retried within the budget"
    receiver.heal(FLAGS)
    assert wait_until(lambda: any(r.accepted for r in receiver.flag_requests()), 5.0)
    assert wait_until(lambda: not cache._fetching, 1.0)
    value, took = _timed_get(cache, "exp")
    assert value == "variant_b"
    assert took < 0.1, "the value was already there"


def test_background_retries_are_bounded(
    receiver: PostHogReceiver, make_cache: MakeCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that keeps failing gets a bounded number of retries, then the failed-fetch
    back-off applies: lookups send nothing more."""
    monkeypatch.setattr(flags, "_BACKGROUND_DELAYS_S", (0.05, 0.1))
    receiver.status(503, route=FLAGS)
    cache, _ = make_cache(budget_s=0.1)
    assert cache.get("exp") is None
    assert wait_until(lambda: not cache._fetching, 5.0)
    sent = len(receiver.flag_requests())
    # 1 + the quick retries that fit in 0.1 s (0.05 s, then 0.1 s would be too late) + 2.
    assert 3 <= sent <= 5
    time.sleep(0.3)
    assert cache.get("exp") is None
    assert len(receiver.flag_requests()) == sent


def test_first_lookup_hurries_a_retry_sleeping_in_the_background(
    receiver: PostHogReceiver, make_cache: MakeCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch started before the first lookup (at session start) and now waiting out a
    long background back-off retries as soon as a lookup waits for it."""
    monkeypatch.setattr(flags, "_BACKGROUND_DELAYS_S", (30.0,))
    receiver.set_flags({"exp": "variant_b"})
    receiver.status(502, route=FLAGS)
    cache, _ = make_cache(budget_s=0.2)
    cache.prefetch(force=True)  # a session starts; nobody looks a flag up yet
    time.sleep(0.5)  # the quick retries are over: the fetch sleeps its 30 s
    sent = len(receiver.flag_requests())
    assert sent >= 2
    receiver.heal(FLAGS)
    value, took = _timed_get(cache, "exp")
    assert value == "variant_b"
    assert took <= 0.2 + SLACK_S
    assert len(receiver.flag_requests()) == sent + 1


# -- refresh ---------------------------------------------------------------------------------


def test_refresh_fetches_the_new_value_now(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """A fresh cache refetches on refresh(): the new value shows up without waiting for
    refresh_s, and refresh() itself returns at once."""
    receiver.set_flags({"exp": "a"})
    cache, _ = make_cache(refresh_s=3600.0)
    assert cache.get("exp") == "a"
    receiver.set_flags({"exp": "b"})
    assert cache.get("exp") == "a", "fresh: no refetch on a lookup"
    started = time.monotonic()
    assert cache.refresh() is None
    assert time.monotonic() - started < 0.1
    assert wait_until(lambda: cache.get("exp") == "b")
    assert len(receiver.flag_requests()) == 2


def test_refresh_ignores_the_failed_fetch_back_off(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """After a final failure lookups wait out the back-off, but refresh() fetches now."""
    receiver.set_flags({"exp": "a"})
    receiver.fail_next(1, Fault.status(401), route=FLAGS)
    cache, _ = make_cache()
    assert cache.get("exp") is None
    assert cache.get("exp") is None
    assert len(receiver.flag_requests()) == 1
    cache.refresh()
    assert wait_until(lambda: cache.get("exp") == "a")
    assert len(receiver.flag_requests()) == 2


def test_refresh_during_a_fetch_is_followed_by_one_more(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """refresh() while a request is out starts no second concurrent fetch, but makes one
    follow it, so the value reflects the host's state after the call."""
    receiver.set_flags({"exp": "a"})
    receiver.slow(0.3, route=FLAGS)
    cache, _ = make_cache()
    cache.prefetch()
    receiver.wait_for_requests(1, route=FLAGS)
    receiver.set_flags({"exp": "b"})  # the request already out may not see it
    started = time.monotonic()
    cache.refresh()
    cache.refresh()
    assert time.monotonic() - started < 0.1, "refresh never blocks"
    receiver.wait_for_requests(2, route=FLAGS)
    assert wait_until(lambda: not cache._fetching)
    assert cache.get("exp") == "b"
    first, second = receiver.flag_requests()  # two refreshes, one follow-up
    assert second.received_at >= first.received_at + 0.25, "one after the other"


def test_refresh_with_the_host_hanging_never_blocks(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """refresh() returns at once whatever the host does."""
    receiver.hang(route=FLAGS)
    cache, _ = make_cache(timeout_s=0.3)
    for _ in range(3):
        started = time.monotonic()
        cache.refresh()
        assert time.monotonic() - started < 0.1
    assert len(receiver.wait_for_requests(1, route=FLAGS)) == 1


# -- fork ------------------------------------------------------------------------------------


def test_after_fork_resets_the_lock_and_the_running_fetch(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """_after_fork() leaves a cache that works even if the lock was held and a fetch was
    running (as in a child forked at that moment), and keeps the cached values."""
    receiver.set_flags({"exp": "a"})
    cache, _ = make_cache()
    assert cache.get("exp") == "a"
    cache._lock.acquire()  # a thread of the parent held it at the fork
    cache._fetching = True  # and its fetch thread does not exist in the child
    cache._after_fork()
    assert cache.get("exp") == "a"
    receiver.set_flags({"exp": "b"})
    cache.refresh()
    assert wait_until(lambda: cache.get("exp") == "b")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads running
def test_cache_refreshes_in_a_forked_child(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """In a child forked while the parent's fetch was out, the reset cache fetches anew."""
    receiver.set_flags({"exp": "a"})
    receiver.fail_next(1, Fault.slow(0.5), route=FLAGS)
    cache, _ = make_cache()
    cache.prefetch()
    receiver.wait_for_requests(1, route=FLAGS)
    receiver.set_flags({"exp": "b"})
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            cache._after_fork()
            cache.refresh()
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                if cache.get("exp") == "b":
                    code = 0
                    break
                time.sleep(0.01)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert wait_until(lambda: cache.get("exp") is not None)


def test_concurrent_lookups_and_refreshes_start_one_fetch_at_a_time(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """Many threads looking up and refreshing at once never run two fetches together."""
    receiver.set_flags({"exp": "a"})
    receiver.slow(0.05, route=FLAGS)
    cache, _ = make_cache()

    def hammer() -> None:
        for _ in range(20):
            cache.get("exp")
            cache.refresh()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wait_until(lambda: not cache._fetching, 5.0)
    requests = receiver.flag_requests()
    for earlier, later in itertools.pairwise(requests):
        assert later.received_at >= earlier.received_at + 0.04, "fetches overlapped"
    assert cache.get("exp") == "a"


# -- the fetch thread ----------------------------------------------------------------------------


def _flag_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "codeweaver-telemetry-flags"}


def test_started_cache_hands_the_first_fetch_to_its_running_thread(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """start() runs the fetch thread idle (nothing is fetched); the first lookup hands it
    the fetch, so no thread is created while the caller waits."""
    receiver.set_flags({"exp": "a"})
    cache, _ = make_cache()
    before = _flag_threads()
    cache.start()
    started = _flag_threads() - before
    assert len(started) == 1
    time.sleep(0.05)
    assert receiver.flag_requests() == []  # idle: no request until a lookup asks
    assert cache.get("exp") == "a"
    assert _flag_threads() - before == started  # the same thread fetched
    cache.refresh()
    assert wait_until(lambda: len(receiver.flag_requests()) == 2)
    assert _flag_threads() - before == started


def test_close_ends_the_idle_fetch_thread(receiver: PostHogReceiver, make_cache: MakeCache) -> None:
    """close() ends the fetch thread once it is idle."""
    receiver.set_flags({"exp": "a"})
    cache, _ = make_cache()
    before = _flag_threads()
    assert cache.get("exp") == "a"
    (thread,) = _flag_threads() - before
    cache.close()
    thread.join(5.0)
    assert not thread.is_alive()


def test_an_idle_fetch_thread_ends_and_the_next_fetch_starts_another(
    receiver: PostHogReceiver, make_cache: MakeCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch thread idle for _IDLE_S ends; the next fetch runs on a new one."""
    monkeypatch.setattr(flags, "_IDLE_S", 0.05)
    receiver.set_flags({"exp": "a"})
    cache, _ = make_cache()
    before = _flag_threads()
    assert cache.get("exp") == "a"
    (first,) = _flag_threads() - before
    first.join(5.0)
    assert not first.is_alive()
    receiver.set_flags({"exp": "b"})
    cache.refresh()
    assert wait_until(lambda: cache.get("exp") == "b")


def test_a_client_starts_its_flag_thread_and_ends_it_at_shutdown(
    receiver: PostHogReceiver, make_client: Callable[..., TelemetryClient]
) -> None:
    """A client with a PostHog key starts its idle flag thread with it and ends it when
    it shuts down."""
    before = _flag_threads()
    client = make_client(posthog_api_key=API_KEY, posthog_host=receiver.url)
    assert client.enabled
    (thread,) = _flag_threads() - before
    client.shutdown(timeout=0.5)
    thread.join(5.0)
    assert not thread.is_alive()
    assert receiver.flag_requests() == []


# -- the flag file and `codeweaver-telemetry flags` ---------------------------------------------

PREFIX = "CODEWEAVER__TELEMETRY__"


def cli(*argv: str, code: int = EXIT_OK) -> dict[str, Any]:
    """Run `codeweaver-telemetry <argv> --json`; check the status and the shape."""
    from tests.test_cli import check_shape

    out = io.StringIO()
    assert main([*argv, "--json"], out=out) == code
    return check_shape(json.loads(out.getvalue()), "flags")


def _point_cli_at(receiver: PostHogReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PREFIX + "POSTHOG_API_KEY", API_KEY)
    monkeypatch.setenv(PREFIX + "POSTHOG_HOST", receiver.url)
    monkeypatch.setenv(PREFIX + "REQUEST_TIMEOUT_SECONDS", "2")


def _state_dir(home: Path) -> Path:
    return home / "telemetry"


def test_flags_shows_what_a_client_fetched_without_a_request(
    clean_env: Path,
    receiver: PostHogReceiver,
    make_client: Callable[..., TelemetryClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client keeps the flags it fetched in flags.json (0600); `flags` shows them
    (key, value, fetch date, source) and sends nothing."""
    receiver.set_flags({"exp": "variant_b", "beta": True, "old": False})
    client = make_client(posthog_api_key=API_KEY, posthog_host=receiver.url)
    assert client.get_feature_flag("exp", default="control") == "variant_b"
    client.shutdown(timeout=1.0)
    path = _state_dir(clean_env) / FLAGS_FILE
    assert wait_until(path.exists)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    _point_cli_at(receiver, monkeypatch)
    sent = len(receiver.flag_requests())
    assert sent == 1
    document = cli("flags")
    assert len(receiver.flag_requests()) == sent, "`flags` makes no request"
    assert document["install_id"] == client.distinct_id
    assert document["source"] == "remote"
    assert document["refreshed"] is False
    assert {f["key"]: f["value"] for f in document["flags"]} == {
        "exp": "variant_b",
        "beta": True,
        "old": False,
    }
    fetched = dt_parse(document["fetched_at"])
    assert abs(time.time() - fetched) < 60
    assert all(f["fetched_at"] == document["fetched_at"] for f in document["flags"])
    assert all(f["source"] == "remote" for f in document["flags"])
    out = io.StringIO()
    assert main(["flags"], out=out) == EXIT_OK
    assert "variant_b" in out.getvalue()
    assert len(receiver.flag_requests()) == sent


def dt_parse(value: str) -> float:
    """An ISO 8601 date in UTC, as a POSIX timestamp."""
    import datetime as dt

    parsed = dt.datetime.fromisoformat(value)
    assert parsed.utcoffset() == dt.timedelta(0), "UTC"
    return parsed.timestamp()


def test_flags_refresh_makes_exactly_one_request_and_stores_it(
    clean_env: Path, receiver: PostHogReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flags --refresh` fetches once, for the install id, with the configured key and host,
    then shows and stores the result; a failed fetch is not retried and exits 1."""
    store = StateStore(_state_dir(clean_env))
    store.set_consent("enabled", by="cli")
    install_id, _ = store.ensure_identity()
    _point_cli_at(receiver, monkeypatch)
    receiver.set_flags({"exp": "a"})
    document = cli("flags", "--refresh")
    requests = receiver.flag_requests()
    assert len(requests) == 1
    assert install_id in requests[0].text
    assert API_KEY in requests[0].text
    assert document["refreshed"] is True
    assert document["install_id"] == install_id
    assert [(f["key"], f["value"]) for f in document["flags"]] == [("exp", "a")]
    stored = read_flag_file(_state_dir(clean_env))
    assert stored is not None
    assert (stored.install_id, stored.values, stored.source) == (install_id, {"exp": "a"}, "remote")
    assert cli("flags")["flags"] == document["flags"], "stored"
    receiver.set_flags({"exp": "b"})
    assert cli("flags", "--refresh")["flags"][0]["value"] == "b"
    assert len(receiver.flag_requests()) == 2
    receiver.status(503, route=FLAGS)
    failed = cli("flags", "--refresh", code=EXIT_FAILURE)
    assert "503" in failed["error"]
    assert len(receiver.flag_requests()) == 3, "one request, no retry"
    assert cli("flags")["flags"][0]["value"] == "b", "a failed fetch keeps the cache"


def test_flags_refresh_with_telemetry_off_sends_nothing(
    clean_env: Path, receiver: PostHogReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off telemetry (DO_NOT_TRACK here), no PostHog key, or no install id yet: a clear
    message, exit 1, and no request."""
    store = StateStore(_state_dir(clean_env))
    store.set_consent("enabled", by="cli")
    _point_cli_at(receiver, monkeypatch)
    no_id = cli("flags", "--refresh", code=EXIT_FAILURE)
    assert "no id yet" in no_id["error"]
    store.ensure_identity()
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    off = cli("flags", "--refresh", code=EXIT_FAILURE)
    assert "telemetry is off" in off["error"]
    assert "DO_NOT_TRACK" in off["error"]
    monkeypatch.delenv("DO_NOT_TRACK")
    monkeypatch.delenv(PREFIX + "POSTHOG_API_KEY")
    no_key = cli("flags", "--refresh", code=EXIT_FAILURE)
    assert "no PostHog API key" in no_key["error"]
    assert receiver.flag_requests() == []
    assert not (_state_dir(clean_env) / FLAGS_FILE).exists()


def test_a_disabled_client_never_writes_the_flag_file(
    clean_env: Path,
    receiver: PostHogReceiver,
    make_client: Callable[..., TelemetryClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Telemetry off: no flag request and no flags.json. A running client whose consent is
    withdrawn (`codeweaver-telemetry disable`) stops writing it too."""
    receiver.set_flags({"exp": "a"})
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    off = make_client(posthog_api_key=API_KEY, posthog_host=receiver.url)
    assert not off.enabled
    assert off.get_feature_flag("exp", default="control") == "control"
    assert not (_state_dir(clean_env) / FLAGS_FILE).exists()
    assert receiver.flag_requests() == []
    monkeypatch.delenv("DO_NOT_TRACK")
    client = make_client(posthog_api_key=API_KEY, posthog_host=receiver.url)
    assert client.get_feature_flag("exp") == "a"
    path = _state_dir(clean_env) / FLAGS_FILE
    assert wait_until(path.exists)
    assert main(["disable"], out=io.StringIO()) == EXIT_OK
    assert not path.exists()
    client.refresh_feature_flags()
    assert wait_until(lambda: len(receiver.flag_requests()) >= 2)
    time.sleep(0.2)
    assert not path.exists(), "written after the user disabled telemetry"


def test_the_flag_file_is_written_on_the_flag_thread(
    receiver: PostHogReceiver, make_cache: MakeCache
) -> None:
    """on_fetched runs on the flag thread, after lookups can see the values; what it
    raises costs the lookups nothing."""
    receiver.set_flags({"exp": "a"})
    seen: list[tuple[str, dict[str, Any], Any]] = []
    _, source = make_cache()
    cache = FlagCache(source, budget_s=1.0, refresh_s=600.0, on_fetched=None)

    def on_fetched(values: dict[str, Any]) -> None:
        seen.append((threading.current_thread().name, values, cache._values))
        raise OSError("boom")

    cache._on_fetched = on_fetched
    assert cache.get("exp") == "a"
    assert wait_until(lambda: not cache._fetching)
    assert seen == [("codeweaver-telemetry-flags", {"exp": "a"}, {"exp": "a"})]
    receiver.set_flags({"exp": "b"})
    cache.refresh()
    assert wait_until(lambda: cache.get("exp") == "b")
    cache.close()


def test_flag_file_write_failures_are_logged_once(
    tmp_path: Path, telemetry_logs: pytest.LogCaptureFixture
) -> None:
    """A state directory that is gone is never created; the failure is logged once."""
    from codeweaver_telemetry._internal import forget_duplicates

    forget_duplicates()
    gone = tmp_path / "gone"
    writer = FlagFile(gone, install_id="id", source="remote")
    assert writer({"exp": "a"}) is None
    assert writer({"exp": "b"}) is None
    assert not gone.exists()
    warnings = [r for r in telemetry_logs.records if "flag cache" in r.getMessage()]
    assert len(warnings) == 1
    assert "could not be written" in warnings[0].getMessage()


def test_flag_file_never_writes_through_a_link(tmp_path: Path) -> None:
    """A symbolic link planted at flags.json is replaced, never followed; a closed gate
    writes nothing."""
    outside = tmp_path / "outside.txt"
    outside.write_text("theirs", encoding="utf-8")
    directory = tmp_path / "state"
    directory.mkdir()
    (directory / FLAGS_FILE).symlink_to(outside)
    FlagFile(directory, install_id="id", source="local")({"exp": "a"})
    assert outside.read_text(encoding="utf-8") == "theirs"
    assert not (directory / FLAGS_FILE).is_symlink()
    stored = read_flag_file(directory)
    assert stored is not None
    assert (stored.values, stored.source) == ({"exp": "a"}, "local")
    assert (
        FlagFile(directory, install_id="id", source="local", gate=lambda: False)({"exp": "b"})
        is None
    )
    stored = read_flag_file(directory)
    assert stored is not None
    assert stored.values == {"exp": "a"}
