"""Usage counters, timers, error capture and the excepthook, as a user wires them in."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codeweaver_telemetry import (
    TelemetryClient,
    capture_error,
    capture_exceptions,
    get_telemetry_client,
    install_excepthook,
    record_usage,
    track_usage,
)
from codeweaver_telemetry.events import timer
from codeweaver_telemetry.sinks.memory import InMemorySink
from codeweaver_telemetry.testing import capture_events

ROOT = Path(__file__).resolve().parents[2]
SECRET_PATH = "/home/alice/private/notes.txt"


@pytest.fixture
def events() -> Iterator[tuple[TelemetryClient, InMemorySink]]:
    """The process-wide client, recording into memory, inside a session."""
    with capture_events() as sink:
        client = get_telemetry_client()
        client.start_session()
        yield client, sink


def session_event(client: TelemetryClient, sink: InMemorySink) -> dict[str, Any]:
    client.end_session()
    client.flush(5)
    (event,) = [e for e in sink.events() if e["event"] == "codeweaver_session"]
    return event["properties"]


def named(sink: InMemorySink, name: str) -> list[dict[str, Any]]:
    return [e["properties"] for e in sink.events() if e["event"] == name]


def test_track_usage_counts_sync_and_async_calls_and_resolves_the_client_late() -> None:
    """A function decorated before any client exists counts each call once the client is on."""

    @track_usage("sync_feature")
    def work(x: int) -> int:
        return x * 2

    @track_usage("async_feature")
    async def work_async(x: int) -> int:
        return x + 1

    assert work(2) == 4, "off: the function still runs"
    with capture_events() as sink:
        client = get_telemetry_client()
        client.start_session()
        assert [work(i) for i in range(3)] == [0, 2, 4]
        assert asyncio.run(work_async(1)) == 2
        record_usage("manual", 2)
        props = session_event(client, sink)
    assert props["usage"] == {"sync_feature": 3, "async_feature": 1, "manual": 2}
    assert work.__name__ == "work", "functools.wraps keeps the name"


def test_timer_records_blocks_decorated_functions_and_failures(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """client.timer works as with, async with and decorator (sync and async); a block that
    raises is timed too and its exception passes through unchanged."""
    client, sink = events

    @client.timer("decorated")
    def step() -> str:
        return "done"

    @timer("decorated_async")
    async def step_async() -> str:
        await asyncio.sleep(0.001)
        return "done"

    async def block() -> None:
        async with client.timer("async_block"):
            await asyncio.sleep(0.001)

    with client.timer("block"):
        pass
    assert step() == "done"
    assert asyncio.run(step_async()) == "done"
    asyncio.run(block())
    with pytest.raises(ZeroDivisionError), client.timer("failing"):
        _ = 1 / 0
    timings = session_event(client, sink)["timings"]
    assert set(timings) == {"block", "decorated", "decorated_async", "async_block", "failing"}
    assert all(t["count"] == 1 for t in timings.values())
    assert timings["decorated_async"]["min"] >= 1.0
    assert named(sink, "codeweaver_timer") == [], "never an event per call"


def test_one_timer_object_shared_by_threads_and_reentered(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """A timer kept in a variable can be entered from many threads and recursively."""
    client, sink = events
    shared = client.timer("shared")

    def recurse(depth: int) -> None:
        with shared:
            if depth:
                recurse(depth - 1)

    threads = [threading.Thread(target=recurse, args=(4,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert session_event(client, sink)["timings"]["shared"]["count"] == 30


def thrower() -> None:
    raise ValueError(f"could not read {SECRET_PATH}")


def test_capture_exceptions_reports_unhandled_and_reraises(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """The block's exception is sent as unhandled (type, frames, fingerprint; no message)
    and re-raised as the very same object."""
    client, sink = events
    original: list[BaseException] = []

    def run() -> None:
        with capture_exceptions():
            try:
                thrower()
            except ValueError as exc:
                original.append(exc)
                raise

    with pytest.raises(ValueError, match="could not read") as caught:
        run()
    assert caught.value is original[0]
    client.flush(5)
    (error,) = named(sink, "codeweaver_error")
    assert error["type"] == "ValueError"
    assert error["handled"] is False
    assert any(frame.endswith(":thrower") for frame in error["frames"])
    assert "message" not in error
    assert SECRET_PATH not in json.dumps(sink.events())


def test_capture_exceptions_ignores_keyboard_interrupt_and_system_exit(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """Leaving by Ctrl-C or sys.exit is not an error: nothing is sent."""
    client, sink = events
    for exc in (KeyboardInterrupt(), SystemExit(2)):
        with pytest.raises(type(exc)), client.capture_exceptions():
            raise exc
    client.flush(5)
    assert named(sink, "codeweaver_error") == []


def test_async_capture_exceptions_decorator(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """As a decorator on a coroutine function, the exception is captured and re-raised."""
    client, sink = events

    @capture_exceptions()
    async def handler() -> None:
        raise LookupError("nothing here")

    with pytest.raises(LookupError):
        asyncio.run(handler())
    client.flush(5)
    (error,) = named(sink, "codeweaver_error")
    assert error["type"] == "LookupError"
    assert error["handled"] is False


def test_one_exception_is_one_error_even_when_captured_twice(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """A capture block and then capture_error (or the excepthook) on the same exception
    object send one event and count once."""
    client, sink = events
    try:
        with capture_exceptions():
            thrower()
    except ValueError as exc:
        second = capture_error(exc)
    client.flush(5)
    errors = named(sink, "codeweaver_error")
    assert len(errors) == 1
    assert errors[0]["fingerprint"] == second
    assert session_event(client, sink)["errors"] == {second: 1}


def test_repeated_errors_send_five_events_and_count_all(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """The same bug raised 8 times in a session: 5 events, a count of 8 in the session."""
    client, sink = events
    fingerprints = set()
    for _ in range(8):
        try:
            thrower()
        except ValueError as exc:
            fingerprints.add(client.capture_error(exc))
    (fingerprint,) = fingerprints
    assert fingerprint is not None
    client.flush(5)
    assert len(named(sink, "codeweaver_error")) == 5
    assert session_event(client, sink)["errors"] == {fingerprint: 8}


def test_error_message_is_sent_only_on_request_and_scrubbed(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """include_message=True adds the message after the scrubber, cut to 200 characters."""
    client, sink = events
    try:
        raise RuntimeError(f"failed for alice@example.com at {SECRET_PATH} " + "z " * 300)
    except RuntimeError as exc:
        client.capture_error(exc, include_message=True)
    client.flush(5)
    (error,) = named(sink, "codeweaver_error")
    message = error["message"]
    assert "<email>" in message
    assert "<path>" in message
    assert "alice" not in message
    assert len(message) <= 200


def test_chained_causes_are_sent_as_types_only(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """raise ... from ...: the cause's type is sent, never its message."""
    client, sink = events
    try:
        try:
            thrower()
        except ValueError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as exc:
        client.capture_error(exc)
    client.flush(5)
    (error,) = named(sink, "codeweaver_error")
    assert error["cause_types"] == ["ValueError"]
    assert "could not read" not in json.dumps(error)


def test_install_excepthook_chains_and_uninstalls(
    events: tuple[TelemetryClient, InMemorySink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook captures an uncaught thread exception as unhandled, then calls the hook that
    was there before; uninstalling restores the previous hooks; installing twice is one."""
    client, sink = events
    seen: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append("previous"))
    monkeypatch.setattr(sys, "excepthook", lambda *a: seen.append("previous sys"))
    previous_thread, previous_sys = threading.excepthook, sys.excepthook
    uninstall = install_excepthook()
    assert install_excepthook() is uninstall
    assert threading.excepthook is not previous_thread

    def crash() -> None:
        raise OSError("disk on fire")

    t = threading.Thread(target=crash)
    t.start()
    t.join()
    try:
        raise TypeError("top level")
    except TypeError as exc:
        sys.excepthook(TypeError, exc, exc.__traceback__)
    uninstall()
    assert threading.excepthook is previous_thread
    assert sys.excepthook is previous_sys
    assert seen == ["previous", "previous sys"]
    client.flush(5)
    errors = named(sink, "codeweaver_error")
    assert sorted(e["type"] for e in errors) == ["OSError", "TypeError"]
    assert all(e["handled"] is False for e in errors)


def test_uncaught_exception_in_a_program_reaches_the_log_before_exit(tmp_path: Path) -> None:
    """A script that installs the hook and dies of an uncaught error: the error event and
    the session event are in the local log; the traceback still prints; exit code is 1."""
    script = tmp_path / "crashing_app.py"
    script.write_text(
        "from codeweaver_telemetry import get_telemetry_client, install_excepthook\n"
        "client = get_telemetry_client()\n"
        "client.start_session()\n"
        "install_excepthook()\n"
        "def load():\n"
        "    raise FileNotFoundError('/home/alice/config.toml')\n"
        "load()\n",
        encoding="utf-8",
    )
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "DO_NOT_TRACK")}
    env.update(
        PYTHONPATH=str(ROOT),
        CODEWEAVER_HOME=str(home),
        CODEWEAVER__TELEMETRY__ENABLED="true",
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "FileNotFoundError" in out.stderr, "the previous hook still prints the traceback"
    lines = (home / "telemetry" / "events.jsonl").read_text(encoding="utf-8").splitlines()
    logged = [json.loads(line) for line in lines]
    names = [e["event"] for e in logged]
    assert names.count("codeweaver_error") == 1
    assert names.count("codeweaver_session") == 1
    (error,) = [e["properties"] for e in logged if e["event"] == "codeweaver_error"]
    assert error["type"] == "FileNotFoundError"
    assert error["frames"] == ["__main__:<module>", "__main__:load"]
    assert "/home/alice" not in "\n".join(lines)


def test_everything_is_a_no_op_when_off(tmp_path: Path) -> None:
    """With telemetry off, the helpers, timers and decorators run the host's code, record
    nothing, write nothing, and load neither pydantic nor posthog."""
    code = f"""
import asyncio, os, sys
os.environ["DO_NOT_TRACK"] = "1"
os.environ["CODEWEAVER_HOME"] = {str(tmp_path / "home")!r}
import codeweaver_telemetry as t
from codeweaver_telemetry.events import timer
c = t.get_telemetry_client()
c.start_session({{"a": 1}})
@t.track_usage("u")
def f(): return 1
@timer("x")
async def g(): return 2
assert f() == 1 and asyncio.run(g()) == 2
with c.timer("y"), t.capture_exceptions():
    pass
assert c.timer("y") is c.timer("z"), "one shared no-op timer"
try:
    raise ValueError("x")
except ValueError as e:
    assert t.capture_error(e) is None
t.capture_search_event(object(), "q", "debug", ["dense"], 1.0)
t.capture_session_event(version="1")
t.record_usage("u")
c.record_request(ok=True)
assert c.statistics is None and c.preview() is None
c.end_session(); c.shutdown()
heavy = ("pydantic", "posthog", "codeweaver_telemetry.events.stats")
print(sorted(m for m in heavy if m in sys.modules))
"""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    assert not (tmp_path / "home").exists()


def test_one_timer_shared_by_overlapping_asyncio_tasks(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """Two tasks in one thread whose blocks overlap without nesting each get their own
    duration (at least 60 ms each, not 30 and 90)."""
    client, sink = events
    shared = client.timer("overlap")

    async def task(delay: float) -> None:
        await asyncio.sleep(delay)
        async with shared:
            await asyncio.sleep(0.06)

    async def main() -> None:
        await asyncio.gather(task(0), task(0.03))

    asyncio.run(main())
    timing = session_event(client, sink)["timings"]["overlap"]
    assert timing["count"] == 2
    assert timing["min"] >= 55, "a swapped pairing records about 30 ms for one of them"


def test_a_reused_exception_object_counts_once_per_session() -> None:
    """The same exception object (a sentinel) captured in two sessions counts in both."""
    sentinel = ValueError("sentinel")
    with capture_events() as sink:
        client = get_telemetry_client()
        for _ in range(2):
            client.start_session()
            client.capture_error(sentinel)
            client.capture_error(sentinel)
            client.end_session()
    sessions = named(sink, "codeweaver_session")
    assert [list(s["errors"].values()) for s in sessions] == [[1], [1]]
    assert len(named(sink, "codeweaver_error")) == 2


def test_an_error_captured_as_handled_then_crashing_is_reported_unhandled(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """capture_error(e) then re-raise into a capture block: the crash is reported too."""
    client, sink = events

    def run() -> None:
        with capture_exceptions():
            try:
                thrower()
            except ValueError as exc:
                capture_error(exc)
                raise

    with pytest.raises(ValueError, match="could not read"):
        run()
    client.flush(5)
    assert [e["handled"] for e in named(sink, "codeweaver_error")] == [True, False]


def test_error_events_outside_a_session_are_limited_too() -> None:
    """A retry loop outside any session sends at most 5 events per fingerprint."""
    with capture_events() as sink:
        client = get_telemetry_client()
        for _ in range(30):
            try:
                thrower()
            except ValueError as exc:
                client.capture_error(exc)
    assert len(named(sink, "codeweaver_error")) == 5


def test_searches_racing_session_ends_are_counted_where_their_event_says() -> None:
    """Threads capture searches while sessions start and end: each session event counts
    exactly the search events that carry its $session_id (none lost between sessions)."""
    from collections import Counter

    from codeweaver_telemetry import SearchResponseSummary

    stop = threading.Event()
    with capture_events(max_queue_size=100_000) as sink:
        client = get_telemetry_client()

        def search() -> None:
            while not stop.is_set():
                client.capture_search_event(SearchResponseSummary(), "q", "debug", [], 1.0)

        threads = [threading.Thread(target=search) for _ in range(3)]
        for t in threads:
            t.start()
        for _ in range(60):
            client.start_session()
            client._end_session()  # (end_session would also wait for a flush)
        stop.set()
        for t in threads:
            t.join()
        client.flush(10)
    per_session = Counter(
        e["properties"].get("$session_id")
        for e in sink.events()
        if e["event"] == "codeweaver_search"
    )
    sessions = named(sink, "codeweaver_session")
    assert len(sessions) == 60
    for props in sessions:
        assert props["searches"]["total"] == per_session[props["$session_id"]]


def test_the_excepthook_ignores_keyboard_interrupt_and_system_exit(
    events: tuple[TelemetryClient, InMemorySink], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C and sys.exit reaching the hook are not errors; the previous hook still runs."""
    client, sink = events
    seen: list[str] = []
    monkeypatch.setattr(sys, "excepthook", lambda *a: seen.append(a[0].__name__))
    uninstall = install_excepthook()
    try:
        for exc in (KeyboardInterrupt(), SystemExit(3)):
            sys.excepthook(type(exc), exc, None)
    finally:
        uninstall()
    client.flush(5)
    assert seen == ["KeyboardInterrupt", "SystemExit"]
    assert named(sink, "codeweaver_error") == []


def test_the_capture_error_helper_never_sends_the_message_by_default(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """Module-level capture_error sends type and frames only unless asked for the message."""
    client, sink = events
    try:
        thrower()
    except ValueError as exc:
        capture_error(exc)
    client.flush(5)
    (error,) = named(sink, "codeweaver_error")
    assert "message" not in error


def test_error_event_limits_are_per_session_and_per_fingerprint_count(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """5 events per fingerprint per session (a new session sends again), and at most 100
    distinct fingerprints as events per session, while the session counts all of them."""
    client, sink = events
    for _ in range(5):
        try:
            thrower()
        except ValueError as exc:
            client.capture_error(exc)
    client.end_session()
    client.start_session()
    try:
        thrower()
    except ValueError as exc:
        client.capture_error(exc)
    for index in range(101):
        kind = type(f"Kind{index}", (Exception,), {})
        try:
            raise kind()
        except Exception as exc:
            client.capture_error(exc)
    client.end_session()
    client.flush(5)
    assert len(named(sink, "codeweaver_error")) == 5 + 1 + 99
    first, second = named(sink, "codeweaver_session")
    assert sum(first["errors"].values()) == 5
    assert sum(second["errors"].values()) == 102


def test_track_usage_does_not_count_at_decoration(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """Decorating while the client is on counts nothing; each call counts one."""
    client, sink = events

    @track_usage("decorated_now")
    def work() -> None:
        return None

    assert client.statistics is not None
    assert client.statistics.snapshot()["usage"] == {}
    work()
    assert session_event(client, sink)["usage"] == {"decorated_now": 1}


def test_a_reentered_timer_pairs_each_exit_with_its_own_entry(
    events: tuple[TelemetryClient, InMemorySink],
) -> None:
    """Entered twice (nested), the inner exit closes the inner entry: about 20 and 60 ms,
    not 40 and 40."""
    client, sink = events
    shared = client.timer("nested")
    with shared:
        time.sleep(0.02)
        with shared:
            time.sleep(0.02)
        time.sleep(0.02)
    timing = session_event(client, sink)["timings"]["nested"]
    assert timing["count"] == 2
    assert timing["min"] < 35
    assert timing["max"] >= 55


def test_session_duration_counts_from_the_session_start() -> None:
    """duration_seconds is the session's length, not the client's age."""
    with capture_events() as sink:
        client = get_telemetry_client()
        time.sleep(0.3)
        client.start_session()
        client.end_session()
    (event,) = sink.events()
    assert event["properties"]["duration_seconds"] < 0.25


def test_negative_durations_are_ignored() -> None:
    """A negative timing or latency is no duration: it is not recorded."""
    with capture_events() as sink:
        client = get_telemetry_client()
        client.start_session()
        client.record_timing("t", -5.0)
        client.record_request(ok=True, latency_ms=-1.0)
        client.end_session()
    (event,) = sink.events()
    assert event["properties"]["timings"] == {}
    assert event["properties"]["requests"]["total"] == 1


def test_labels_are_fixed_at_capture_time() -> None:
    """An intent object whose str() changes later is read when the search is captured."""
    state = {"text": "original"}

    class Intent:
        def __str__(self) -> str:
            return state["text"]

    with capture_events(batch_interval_seconds=60) as sink:
        client = get_telemetry_client()
        client.capture_search_event(object(), "q", Intent())
        state["text"] = "changed"
        client.flush(5)
    (event,) = sink.events()
    assert event["properties"]["intent"] == "original"


def test_records_racing_the_session_end_are_in_its_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Usage recorded by threads while sessions end lands in the session event or in no
    session, never in a session after its event was built."""
    from codeweaver_telemetry import SessionStatistics

    original = SessionStatistics.snapshot

    def slow_snapshot(self: SessionStatistics) -> dict[str, Any]:
        time.sleep(0.002)  # widen the window between building the event and closing
        return original(self)

    monkeypatch.setattr(SessionStatistics, "snapshot", slow_snapshot)
    stop = threading.Event()
    with capture_events(max_queue_size=10_000) as sink:
        client = get_telemetry_client()

        def record() -> None:
            while not stop.is_set():
                client.record_usage("u")

        threads = [threading.Thread(target=record) for _ in range(3)]
        for t in threads:
            t.start()
        kept = []
        for _ in range(30):
            client.start_session()
            kept.append(client.statistics)
            time.sleep(0.002)
            client._end_session()
        stop.set()
        for t in threads:
            t.join()
        client.flush(10)
    sent = [e["properties"]["usage"].get("u", 0) for e in sink.events()]
    recorded = [original(stats)["usage"].get("u", 0) for stats in kept if stats is not None]
    assert sent == recorded
