"""The background worker and its delivery layer: batching, flush and shutdown deadlines, retry
and back-off, the host's rate limit, queue bound, fork."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from codeweaver_telemetry import pipeline
from codeweaver_telemetry._types import Event, ExportResult, Sink
from codeweaver_telemetry._worker import Worker
from codeweaver_telemetry.sinks.memory import FunctionSink, InMemorySink
from tests.helpers import SLACK_S, wait_until

THREAD_NAME = "codeweaver-telemetry"
HANG_S = 10.0


def passthrough(event: Event, on_drop: Callable[[str], None]) -> Event | None:
    """The identity pipeline."""
    return event


def ev(name: str = "e") -> Event:
    return Event(name=name, properties={}, timestamp=time.time(), uuid=str(uuid.uuid4()))


def names(batch: Sequence[Event]) -> list[str]:
    return [e.name for e in batch]


def telemetry_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == THREAD_NAME}


class FakeClock:
    """The worker's clock, moved only by the test (:meth:`advance`).

    A wait returns after a short real pause, and the worker then looks at the time again,
    so a back-off of seconds passes in the milliseconds it takes to advance past it.
    """

    PAUSE_S = 0.002

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wait(self, waitable: Any, timeout: float | None) -> bool:
        return bool(waitable.wait(0 if timeout is not None and timeout <= 0 else self.PAUSE_S))

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settle() -> None:
    """Let a worker on a fake clock run for a while (real time) without moving the clock."""
    time.sleep(0.05)


class _RetryAfter:
    """A RETRY that carries the host's Retry-After (for ``_types`` without ExportResult.retry)."""

    def __init__(self, after: float) -> None:
        self.retry_after = after

    def __eq__(self, other: object) -> bool:
        return other is ExportResult.RETRY or isinstance(other, _RetryAfter)

    def __hash__(self) -> int:
        return hash(ExportResult.RETRY)


def retry_after(seconds: float) -> Any:
    """``ExportResult.retry(seconds)``, or a stand-in where ``_types`` has no such thing."""
    make = getattr(ExportResult, "retry", None)
    return make(seconds) if callable(make) else _RetryAfter(seconds)


@pytest.fixture
def make_worker() -> Iterator[Callable[..., Worker]]:
    """Build workers (long interval unless told); all are shut down afterwards."""
    made: list[Worker] = []

    def factory(
        sink: Sink,
        *,
        batch_size: int = 100,
        interval_s: float = 60.0,
        max_queue: int = 1000,
        process: Callable[[Event, Callable[[str], None]], Event | None] = passthrough,
        **options: Any,
    ) -> Worker:
        worker = Worker(
            sink=sink,
            process=process,
            batch_size=batch_size,
            interval_s=interval_s,
            max_queue=max_queue,
            **options,
        )
        made.append(worker)
        return worker

    yield factory
    for worker in made:
        worker.shutdown(0.5)


@pytest.fixture
def gate(make_worker: Callable[..., Worker]) -> Iterator[threading.Event]:
    """Holds a hanging sink until the test ends (released before the workers shut down)."""
    event = threading.Event()
    yield event
    event.set()


class Recorder:
    """A FunctionSink handler that records each delivered batch; may fail or hang first."""

    def __init__(
        self,
        results: Sequence[Any] = (),
        gate: threading.Event | None = None,
    ) -> None:
        self.results = list(results)
        self.gate = gate
        self.entered = threading.Event()
        self.calls = 0
        self.batches: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, batch: Sequence[Event]) -> ExportResult:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(HANG_S)
        with self.lock:
            self.calls += 1
            result = self.results.pop(0) if self.results else ExportResult.SUCCESS
            if isinstance(result, type):
                raise result("the sink broke")
            if result == ExportResult.SUCCESS:
                self.batches.append(names(batch))
            return result

    @property
    def delivered(self) -> list[str]:
        with self.lock:
            return [n for b in self.batches for n in b]


# -- batching -------------------------------------------------------------------------------
def test_a_full_batch_starts_a_send_that_takes_everything_waiting(
    make_worker: Callable[..., Worker],
) -> None:
    """batch_size events waiting start a send, which takes every event waiting (fewer,
    larger requests); a flush sends the partial rest."""
    rec = Recorder()
    worker = make_worker(FunctionSink(rec), batch_size=5)
    for i in range(4):
        assert worker.submit(ev(f"e{i}"))
    time.sleep(0.2)
    assert rec.batches == [], "fewer than batch_size events wait for the interval"
    for i in range(4, 12):
        assert worker.submit(ev(f"e{i}"))
    assert wait_until(lambda: len(rec.delivered) >= 10)
    assert worker.flush(5)
    sizes = [len(b) for b in rec.batches]
    assert sum(sizes) == 12
    assert all(size >= 5 for size in sizes[:-1]), sizes
    assert rec.delivered == [f"e{i}" for i in range(12)]


def test_a_backlog_goes_out_in_requests_of_max_batch(make_worker: Callable[..., Worker]) -> None:
    """A backlog larger than one request is sent in requests of MAX_BATCH events."""
    from codeweaver_telemetry._delivery import MAX_BATCH

    rec = Recorder()
    worker = make_worker(FunctionSink(rec), batch_size=10_000, max_queue=5000)
    for i in range(2500):
        assert worker.submit(ev(f"e{i}"))
    assert worker.flush(10)
    assert [len(b) for b in rec.batches] == [MAX_BATCH, MAX_BATCH, 500]


def test_interval_sends_a_partial_batch(make_worker: Callable[..., Worker]) -> None:
    """A partial batch is sent once the interval has passed, without a flush."""
    clock = FakeClock()
    sink = InMemorySink()
    worker = make_worker(sink, batch_size=100, interval_s=5.0, clock=clock)
    for i in range(3):
        worker.submit(ev(f"e{i}"))
    clock.advance(4.9)
    settle()
    assert sink.events() == []
    clock.advance(0.1)
    assert wait_until(lambda: len(sink.events()) == 3)
    assert [e["event"] for e in sink.events()] == ["e0", "e1", "e2"]
    assert worker.pending == 0


# -- flush ----------------------------------------------------------------------------------
def test_flush_returns_true_once_delivered(make_worker: Callable[..., Worker]) -> None:
    """flush() returns True when everything queued has been delivered."""
    sink = InMemorySink()
    worker = make_worker(sink)
    for i in range(7):
        worker.submit(ev(f"e{i}"))
    assert worker.flush(5) is True
    assert len(sink.events()) == 7
    assert worker.sent == 7
    assert worker.pending == 0


def test_flush_with_nothing_queued_is_true(make_worker: Callable[..., Worker]) -> None:
    """flush() on an idle worker returns True at once and starts no thread."""
    before = telemetry_threads()
    worker = make_worker(InMemorySink())
    assert worker.flush(5) is True
    assert telemetry_threads() - before == set()


def test_flush_returns_false_while_the_sink_keeps_asking_to_retry(
    make_worker: Callable[..., Worker],
) -> None:
    """flush() returns False when the sink answers RETRY; the events are kept, not lost."""
    worker = make_worker(FunctionSink(lambda batch: ExportResult.RETRY))
    for i in range(3):
        worker.submit(ev(f"e{i}"))
    assert worker.flush(2) is False
    assert worker.flush(2) is False
    assert worker.pending == 3
    assert worker.sent == 0


def test_flush_returns_within_its_timeout_when_the_sink_hangs(
    make_worker: Callable[..., Worker], gate: threading.Event
) -> None:
    """flush(timeout) returns False within its timeout when the sink hangs."""
    rec = Recorder(gate=gate)
    worker = make_worker(FunctionSink(rec))
    worker.submit(ev())
    start = time.monotonic()
    assert worker.flush(0.3) is False
    assert time.monotonic() - start < 0.3 + SLACK_S


# -- the queue bound ------------------------------------------------------------------------
def test_full_queue_refuses_the_newest_event_and_counts_it(
    make_worker: Callable[..., Worker], gate: threading.Event
) -> None:
    """A full queue refuses the newest event (submit is False), counts it, and never blocks."""
    rec = Recorder(gate=gate)
    worker = make_worker(FunctionSink(rec), batch_size=1, max_queue=3)
    assert worker.submit(ev("e0"))
    assert rec.entered.wait(5)  # the sink now holds e0 and hangs
    assert worker.submit(ev("e1"))
    assert worker.submit(ev("e2"))
    start = time.monotonic()
    refused = [worker.submit(ev("late")) for _ in range(100)]
    assert time.monotonic() - start < SLACK_S
    assert refused == [False] * 100
    assert worker.dropped["queue_full"] == 100
    gate.set()
    assert worker.flush(5)
    assert rec.delivered == ["e0", "e1", "e2"]


def test_reserved_slots_keep_room_for_the_session_summary(
    make_worker: Callable[..., Worker], gate: threading.Event
) -> None:
    """When the app fills the queue, the library's session summary still gets in."""
    rec = Recorder(gate=gate)
    worker = make_worker(FunctionSink(rec), batch_size=1, max_queue=3)
    assert worker.submit(ev("e0"))
    assert rec.entered.wait(5)
    assert worker.submit(ev("e1"))
    assert worker.submit(ev("e2"))
    assert not worker.submit(ev("app"))
    assert worker.submit(ev("summary"), reserved=True)
    gate.set()
    assert worker.flush(5)
    assert rec.delivered == ["e0", "e1", "e2", "summary"]


# -- sink results ---------------------------------------------------------------------------
def test_retry_keeps_the_batch_and_delivers_it_later_exactly_once(
    make_worker: Callable[..., Worker],
) -> None:
    """A batch the sink answered RETRY to is kept and delivered later, once, with no duplicate."""
    rec = Recorder([ExportResult.RETRY, ExportResult.RETRY])
    worker = make_worker(FunctionSink(rec))
    worker.submit(ev("a"))
    worker.submit(ev("b"))
    assert worker.flush(2) is False
    worker.submit(ev("c"))
    assert worker.flush(2) is False
    assert worker.flush(2) is True
    assert sorted(rec.delivered) == ["a", "b", "c"]
    assert worker.flush(2) is True
    assert sorted(rec.delivered) == ["a", "b", "c"]
    assert rec.calls == 3
    assert worker.sent == 3
    assert worker.pending == 0
    assert not worker.dropped


def test_drop_counts_sink_rejected(make_worker: Callable[..., Worker]) -> None:
    """A batch the sink answered DROP is counted as sink_rejected and not retried."""
    rec = Recorder([ExportResult.DROP])
    worker = make_worker(FunctionSink(rec))
    for i in range(4):
        worker.submit(ev(f"e{i}"))
    assert worker.flush(2) is True
    assert worker.dropped["sink_rejected"] == 4
    assert worker.pending == 0
    assert worker.flush(2) is True
    assert rec.calls == 1
    assert rec.delivered == []


def test_a_sink_that_raises_does_not_kill_the_thread(
    make_worker: Callable[..., Worker],
) -> None:
    """A sink that raises does not kill the worker: its batch and later events still arrive."""
    rec = Recorder([RuntimeError, RuntimeError])
    worker = make_worker(FunctionSink(rec))
    worker.submit(ev("a"))
    assert worker.flush(2) is False
    worker.submit(ev("b"))
    assert worker.flush(2) is False
    worker.submit(ev("c"))
    assert worker.flush(2) is True
    assert sorted(rec.delivered) == ["a", "b", "c"]
    worker.submit(ev("d"))
    assert worker.flush(2) is True
    assert sorted(rec.delivered) == ["a", "b", "c", "d"]


# -- delivery: back-off, the host's rate limit, 413 splitting -------------------------------
def test_back_off_starts_at_one_second_and_doubles(make_worker: Callable[..., Worker]) -> None:
    """After each failed export the next try waits 1 s, then 2 s, then 4 s; a success ends it."""
    clock = FakeClock()
    rec = Recorder([ExportResult.RETRY] * 3)
    worker = make_worker(FunctionSink(rec), batch_size=1, clock=clock)
    worker.submit(ev("e"))
    assert wait_until(lambda: rec.calls == 1)
    for calls, back_off in ((1, 1.0), (2, 2.0), (3, 4.0)):
        clock.advance(back_off - 0.01)
        settle()
        assert rec.calls == calls, f"tried before its {back_off} s back-off ended"
        assert worker.consecutive_failures == calls
        clock.advance(0.01)
        assert wait_until(lambda n=calls: rec.calls == n + 1)
    assert wait_until(lambda: rec.delivered == ["e"])
    assert worker.consecutive_failures == 0
    assert worker.sent == 1


@pytest.mark.parametrize("where", ["result", "sink attribute"])
def test_the_hosts_retry_after_is_honoured(make_worker: Callable[..., Worker], where: str) -> None:
    """A Retry-After longer than the back-off is waited out, whether the result carries it
    (``ExportResult.retry(after)``) or, from an older sink, its ``retry_after_s``."""
    clock = FakeClock()
    if where == "result":
        sink: Sink = FunctionSink(rec := Recorder([retry_after(5.0)]))
    else:
        rec = Recorder([ExportResult.RETRY])

        class OldSink(FunctionSink):
            retry_after_s = 0.0

            def export(self, batch: Sequence[Event]) -> ExportResult:
                result = super().export(batch)
                self.retry_after_s = 5.0 if result == ExportResult.RETRY else 0.0
                return result

        sink = OldSink(rec)
    worker = make_worker(sink, batch_size=1, clock=clock)
    worker.submit(ev("e"))
    assert wait_until(lambda: rec.calls == 1)
    clock.advance(4.9)  # well past the 1 s back-off
    settle()
    assert rec.calls == 1, "a request before the host's Retry-After"
    clock.advance(0.1)
    assert wait_until(lambda: rec.delivered == ["e"])


def test_the_rate_limit_holds_a_flush_and_the_exit_too(
    make_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    """While the host's Retry-After runs, a flush sends nothing (and returns at once when
    the limit outlasts it), and shutdown spools at once; a plain back-off a flush may skip."""
    from codeweaver_telemetry._spool import Spool

    (tmp_path / "spool").mkdir()
    clock = FakeClock()
    rec = Recorder([retry_after(30.0)])
    spool = Spool(tmp_path / "spool")
    worker = make_worker(FunctionSink(rec), batch_size=1, spool=spool, clock=clock)
    worker.submit(ev("a"))
    assert wait_until(lambda: rec.calls == 1)
    assert worker.flush(5) is False
    settle()
    assert rec.calls == 1
    clock.advance(10)
    worker.submit(ev("b"))
    settle()
    assert rec.calls == 1
    start = time.monotonic()
    assert worker.shutdown(2) is False
    assert time.monotonic() - start < SLACK_S
    assert rec.calls == 1, "no request at exit either"
    assert worker.spooled == 2
    assert worker.dropped == {}


def test_a_flush_goes_before_the_back_off_ends_once_the_limit_lifts(
    make_worker: Callable[..., Worker],
) -> None:
    """A flush waits out the host's Retry-After (0.5 s here) but not the back-off (1 s): it
    sends as soon as the limit ends."""
    clock = FakeClock()
    rec = Recorder([retry_after(0.5)])
    worker = make_worker(FunctionSink(rec), batch_size=1, clock=clock)
    worker.submit(ev("a"))
    assert wait_until(lambda: rec.calls == 1)
    box: list[object] = []
    flushing = threading.Thread(target=lambda: box.append(worker.flush(3)), daemon=True)
    flushing.start()
    settle()
    assert rec.calls == 1
    clock.advance(0.5)
    flushing.join(5)
    assert box == [True]
    assert rec.delivered == ["a"]


def test_a_413_is_sent_again_in_halves(make_worker: Callable[..., Worker]) -> None:
    """SPLIT (HTTP 413) sends the batch again in halves, down to single events; one event
    alone that is still too large is dropped (too_large), the rest delivered once."""

    def handler(batch: Sequence[Event]) -> ExportResult:
        if len(batch) > 2 or any(e.name == "huge" for e in batch):
            return ExportResult.SPLIT
        sent.append(names(batch))
        return ExportResult.SUCCESS

    sent: list[list[str]] = []
    worker = make_worker(FunctionSink(handler))
    for name in ("a", "b", "c", "huge", "d"):
        worker.submit(ev(name))
    assert worker.flush(5) is True
    assert sent == [["a", "b"], ["c"], ["d"]]
    assert worker.sent == 4
    assert worker.dropped == {"too_large": 1}


def test_the_rate_limit_holds_the_other_half_of_a_split(
    make_worker: Callable[..., Worker],
) -> None:
    """A half answered with Retry-After stops the other half's request until it ends."""
    clock = FakeClock()
    rec = Recorder([ExportResult.SPLIT, retry_after(10.0)])
    worker = make_worker(FunctionSink(rec), clock=clock)
    for i in range(4):
        worker.submit(ev(f"e{i}"))
    assert worker.flush(5) is False
    assert rec.calls == 2
    assert worker.pending == 4
    clock.advance(10)
    assert wait_until(lambda: rec.delivered == ["e0", "e1", "e2", "e3"])


# -- shutdown -------------------------------------------------------------------------------
def test_shutdown_is_idempotent_and_refuses_later_events(
    make_worker: Callable[..., Worker],
) -> None:
    """shutdown() delivers what is queued, can be called again, and later submits are refused."""
    sink = InMemorySink()
    worker = make_worker(sink)
    worker.submit(ev("a"))
    assert worker.shutdown(2) is True
    assert [e["event"] for e in sink.events()] == ["a"]
    assert sink.shut_down
    assert worker.shutdown(2) is True
    assert worker.submit(ev("late")) is False
    assert worker.dropped["shutdown"] == 1
    assert worker.flush(1) is True
    assert [e["event"] for e in sink.events()] == ["a"]


def test_shutdown_is_bounded_by_its_timeout_with_a_hanging_sink(
    make_worker: Callable[..., Worker], gate: threading.Event
) -> None:
    """shutdown(timeout) returns within its timeout when the sink hangs, and counts the loss."""
    rec = Recorder(gate=gate)
    worker = make_worker(FunctionSink(rec))
    worker.submit(ev("a"))
    worker.submit(ev("b"))
    start = time.monotonic()
    assert worker.shutdown(0.3) is False
    assert time.monotonic() - start < 0.3 + SLACK_S
    assert worker.dropped["exit_timeout"] == 2
    start = time.monotonic()
    worker.shutdown(0.3)
    assert time.monotonic() - start < 0.3 + SLACK_S
    assert worker.submit(ev("late")) is False
    assert worker.dropped["shutdown"] == 1


def test_shutdown_of_an_unused_worker_starts_no_thread(
    make_worker: Callable[..., Worker],
) -> None:
    """Shutting down a worker that never saw an event is immediate and starts no thread."""
    before = telemetry_threads()
    sink = InMemorySink()
    worker = make_worker(sink)
    assert worker.shutdown(1) is True
    assert sink.shut_down
    assert telemetry_threads() - before == set()


# -- the thread -----------------------------------------------------------------------------
def test_thread_is_a_named_daemon_started_by_the_first_event(
    make_worker: Callable[..., Worker],
) -> None:
    """No thread runs until the first event; then one daemon named codeweaver-telemetry does."""
    before = telemetry_threads()
    worker = make_worker(InMemorySink())
    assert telemetry_threads() - before == set()
    worker.submit(ev())
    worker.submit(ev())
    new = telemetry_threads() - before
    assert len(new) == 1
    (thread,) = new
    assert thread.daemon
    assert thread.is_alive()
    assert worker.shutdown(2)
    thread.join(2)
    assert not thread.is_alive()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_forked_child_gets_a_fresh_thread_and_an_empty_queue(
    make_worker: Callable[..., Worker],
) -> None:
    """In a forked child, submit starts a new thread; the parent's queued events stay its own."""
    sink = InMemorySink()
    worker = make_worker(sink)
    worker.submit(ev("parent-1"))
    worker.submit(ev("parent-2"))
    assert worker.pending == 2
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_fd)
            report: dict[str, Any] = {"pending_at_start": worker.pending}
            report["submitted"] = worker.submit(ev("child"))
            report["threads"] = [t.name for t in threading.enumerate()]
            report["flushed"] = worker.flush(5)
            report["sent"] = [e["event"] for e in sink.events()]
            os.write(write_fd, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    report = json.loads(b"".join(chunks))
    assert report["pending_at_start"] == 0
    assert report["submitted"] is True
    assert THREAD_NAME in report["threads"]
    assert report["flushed"] is True
    assert report["sent"] == ["child"]
    # The parent still owns, and delivers, its own events.
    assert worker.flush(5)
    assert [e["event"] for e in sink.events()] == ["parent-1", "parent-2"]


# -- the pipeline ---------------------------------------------------------------------------
def test_a_stage_that_raises_drops_only_that_event(make_worker: Callable[..., Worker]) -> None:
    """A pipeline stage that raises drops that event (counted stage_error); others go on."""

    def fragile(event: Event) -> Event:
        if event.name == "bad":
            raise ValueError("boom")
        return event

    stages = (fragile, *pipeline.DEFAULT_STAGES)
    sink = InMemorySink()
    worker = make_worker(sink, process=lambda e, on_drop: pipeline.run(e, stages, on_drop=on_drop))
    for name in ("good-1", "bad", "good-2"):
        worker.submit(ev(name))
    assert worker.flush(5)
    assert [e["event"] for e in sink.events()] == ["good-1", "good-2"]
    assert worker.dropped["stage_error"] == 1
    assert worker.sent == 2
    worker.submit(ev("good-3"))
    assert worker.flush(5)
    assert [e["event"] for e in sink.events()][-1] == "good-3"


def test_a_stage_returning_none_drops_and_names_itself(
    make_worker: Callable[..., Worker],
) -> None:
    """A stage that returns None drops the event, counted as dropped_by_<stage name>."""

    def veto(event: Event) -> Event | None:
        return None if event.name == "vetoed" else event

    sink = InMemorySink()
    worker = make_worker(sink, process=lambda e, on_drop: pipeline.run(e, (veto,), on_drop=on_drop))
    worker.submit(ev("vetoed"))
    worker.submit(ev("kept"))
    assert worker.flush(5)
    assert [e["event"] for e in sink.events()] == ["kept"]
    assert worker.dropped["dropped_by_veto"] == 1


def test_the_real_pipeline_finishes_events(make_worker: Callable[..., Worker]) -> None:
    """With the default pipeline, events leave scrubbed and carrying the library's properties."""
    sink = InMemorySink()
    worker = make_worker(sink, process=lambda e, on_drop: pipeline.run(e, on_drop=on_drop))
    event = ev("opened")
    event.properties = {"where": "/home/alice/notes.txt", "$set": {"email": "a@b.co"}}
    worker.submit(event)
    assert worker.flush(5)
    (sent,) = sink.events()
    assert sent["properties"]["where"] == "<path>"
    assert "$set" not in sent["properties"]
    assert sent["properties"]["$process_person_profile"] is False
    assert sys.version.startswith(sent["properties"]["$python_version"])


def test_an_idle_worker_still_sends_on_the_interval(make_worker: Callable[..., Worker]) -> None:
    """After the worker has gone idle, a new event is still sent once the interval passes."""
    clock = FakeClock()
    sink = InMemorySink()
    worker = make_worker(sink, batch_size=100, interval_s=10.0, clock=clock)
    worker.submit(ev("first"))
    clock.advance(10)
    assert wait_until(lambda: len(sink.events()) == 1)
    clock.advance(300)  # idle: nothing queued
    settle()
    worker.submit(ev("second"))
    clock.advance(9.9)
    settle()
    assert len(sink.events()) == 1
    clock.advance(0.1)
    assert wait_until(lambda: len(sink.events()) == 2, timeout=3)


_SIGNAL_SCRIPT = """
import signal, sys, time
from codeweaver_telemetry._types import Event
from codeweaver_telemetry._worker import Worker
from codeweaver_telemetry.sinks.memory import InMemorySink

sink = InMemorySink()
worker = Worker(sink=sink, process=lambda e, d: e, batch_size=100, interval_s=60,
                max_queue=100_000)
def handler(signum, frame):
    worker.submit(Event("from_signal", {}, time.time(), "u"))
signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:
    worker.submit(Event("main", {}, time.time(), "u"))
signal.setitimer(signal.ITIMER_REAL, 0)
assert worker.flush(10)
print(sum(e["event"] == "from_signal" for e in sink.events()))
"""


def test_a_signal_handler_may_capture_while_submit_is_running() -> None:
    """submit() re-entered on the same thread (a signal handler) does not deadlock."""
    import signal
    import subprocess
    import sys

    if not hasattr(signal, "setitimer"):
        pytest.skip("no interval timers here")
    out = subprocess.run(
        [sys.executable, "-c", _SIGNAL_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) > 0


def test_flush_from_inside_the_sink_returns_at_once(make_worker: Callable[..., Worker]) -> None:
    """A sink that calls flush() on its own worker gets False at once, not a wait on itself."""
    took: list[float] = []
    holder: list[Worker] = []

    def handler(batch: object) -> None:
        start = time.monotonic()
        holder[0].flush(5)
        took.append(time.monotonic() - start)

    worker = make_worker(FunctionSink(handler))
    holder.append(worker)
    worker.submit(ev("e"))
    assert worker.flush(10)
    assert took
    assert took[0] < SLACK_S


# -- hardening: retries end in the spool, drops are reported, consent is re-checked ---------
def test_after_max_retries_events_go_to_the_spool_not_memory(
    make_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    """A host that keeps failing: after max_retries failed tries the events leave memory for
    the disk spool, and are delivered from there once the host recovers."""
    from codeweaver_telemetry._spool import Spool

    (tmp_path / "spool").mkdir()
    clock = FakeClock()
    recorder = Recorder([ExportResult.RETRY] * 2)
    spool = Spool(tmp_path / "spool")
    worker = make_worker(
        FunctionSink(recorder), batch_size=3, spool=spool, max_retries=1, clock=clock
    )
    for i in range(3):
        worker.submit(ev(f"e{i}"))
    assert wait_until(lambda: recorder.calls == 1)
    clock.advance(1.0)  # the first back-off
    assert wait_until(lambda: worker.spooled == 3, timeout=5)
    assert recorder.calls == 2, "one try and one retry, then the spool"
    assert worker.pending == 0, "nothing is kept in memory"
    clock.advance(1.9)  # the spool drain waits for the back-off (now 2 s) too
    settle()
    assert recorder.calls == 2
    clock.advance(0.1)
    assert wait_until(lambda: sorted(recorder.delivered) == ["e0", "e1", "e2"], timeout=5)
    assert wait_until(lambda: not spool.has_files(), timeout=5)


def test_without_a_spool_retries_stay_in_memory(make_worker: Callable[..., Worker]) -> None:
    """With no spool to fall back on, a failing batch is kept in memory, never dropped."""
    clock = FakeClock()
    recorder = Recorder([ExportResult.RETRY])
    worker = make_worker(FunctionSink(recorder), batch_size=1, max_retries=0, clock=clock)
    worker.submit(ev("kept"))
    assert wait_until(lambda: recorder.calls == 1)
    assert worker.pending == 1
    clock.advance(1.0)
    assert wait_until(lambda: recorder.delivered == ["kept"], timeout=5)
    assert worker.dropped == {}


def test_a_full_queue_is_reported_once_when_dropping_starts_and_once_when_it_stops(
    make_worker: Callable[..., Worker],
    gate: threading.Event,
    telemetry_logs: pytest.LogCaptureFixture,
) -> None:
    """50,000 captures into a queue of 100 on a hanging sink: one WARNING when refusing
    starts, one summary with the count when it stops (not one line per drop)."""
    worker = make_worker(FunctionSink(Recorder(gate=gate)), batch_size=10, max_queue=100)
    for i in range(50_000):
        worker.submit(ev(f"e{i}"))
    warnings = [r for r in telemetry_logs.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "queue is full" in warnings[0].getMessage()
    dropped = worker.dropped["queue_full"]
    assert dropped >= 49_000
    gate.set()
    assert worker.flush(5)
    worker.submit(ev("after"))
    warnings = [r for r in telemetry_logs.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert f"{dropped} events were dropped" in warnings[1].getMessage()
    gate.clear()  # the host hangs again: another episode within the minute, no new lines
    for i in range(5000):
        worker.submit(ev(f"again{i}"))
    worker.shutdown(2)
    lines = [r.getMessage() for r in telemetry_logs.records if r.levelname == "WARNING"]
    assert len(lines) == 3, lines
    assert "events were dropped" in lines[2], "the rest is summed up at shutdown"


def test_a_gate_that_closes_drops_everything_held_and_refuses_more(
    make_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    """Once the stored choice says no, nothing held is sent or spooled, and later events
    are refused; the owner is told once."""
    from codeweaver_telemetry._spool import Spool

    (tmp_path / "spool").mkdir()
    allowed = threading.Event()
    allowed.set()
    told: list[bool] = []
    recorder = Recorder()
    worker = make_worker(
        FunctionSink(recorder),
        spool=Spool(tmp_path / "spool"),
        gate=allowed.is_set,
        on_revoked=lambda: told.append(True),
    )
    worker.submit(ev("sent"))
    assert worker.flush(5)
    for i in range(5):
        worker.submit(ev(f"held{i}"))
    allowed.clear()
    assert not worker.flush(5)
    assert not worker.submit(ev("refused"))
    worker.shutdown(1)
    assert recorder.delivered == ["sent"]
    assert worker.dropped["consent_off"] == 6
    assert worker.spooled == 0
    assert list((tmp_path / "spool").iterdir()) == []
    assert told == [True]


# -- a long outage, in few words ------------------------------------------------------------------
def test_a_ten_minute_outage_costs_a_few_warning_lines(
    make_worker: Callable[..., Worker], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten (simulated) minutes of a host that answers 503 or 429 while 30,000 events are
    captured, with a spool that fills up: at most 10 WARNING lines in all (the outage, the
    full spool, the recovery), and after it every event is delivered or counted."""
    from codeweaver_telemetry._spool import Spool

    caplog.set_level(logging.WARNING, logger="codeweaver_telemetry")
    clock = FakeClock()
    down = threading.Event()
    down.set()
    delivered: list[str] = []

    def host(batch: Sequence[Event]) -> Any:
        if down.is_set():
            return retry_after(30.0) if len(delivered) % 2 else ExportResult.RETRY
        delivered.extend(e.uuid for e in batch)
        return ExportResult.SUCCESS

    spool = Spool(tmp_path / "spool", max_bytes=200_000)
    (tmp_path / "spool").mkdir()
    worker = make_worker(FunctionSink(host), batch_size=10, max_queue=500, spool=spool, clock=clock)
    n = 0
    for _ in range(600):  # one simulated second at a time
        for _ in range(50):
            assert worker.submit(Event("e", {"i": n}, time.time(), str(uuid.uuid4()), "d"))
            n += 1
        clock.advance(1.0)
    down.clear()
    for _ in range(400):  # the host is back: the spool drains
        clock.advance(1.0)
        time.sleep(0.002)
        if not spool.has_files() and not worker.pending:
            break
    assert worker.flush(5)
    warnings_logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings_logged) <= 10, [r.getMessage() for r in warnings_logged]
    assert any("does not answer" in r.getMessage() for r in warnings_logged)
    assert any("answers again" in r.getMessage() for r in warnings_logged)
    assert any("is full" in r.getMessage() for r in warnings_logged)
    lost = worker.dropped
    assert set(lost) == {"spool_full"}, lost  # the spool did fill up
    assert len(set(delivered)) + lost["spool_full"] == n == 30_000
