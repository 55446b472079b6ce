# SPDX-License-Identifier: MIT OR Apache-2.0
"""The background worker: a bounded queue, one daemon thread, batching, retry, deadlines.

Queue policy: when the queue is full, the *newest* event is refused and counted
(``queue_full``); the caller is never blocked. A few slots beyond the bound are kept for
the library's session summary. The thread starts on the first event, is a
daemon (it never keeps the process alive), and is recreated in a forked child (the child
starts with an empty queue: the parent's events are the parent's to send).

The worker wakes when ``batch_size`` events are waiting, when ``interval_s`` has passed
since the oldest one arrived, or when asked to flush (a flush sends up to 100 events per
request). It runs each event through the privacy pipeline, then hands the batch to the
sink. A batch the sink could not deliver (RETRY) is kept, up to the queue bound, and tried
again with exponential backoff (1 s doubling to 60 s); a flush tries again at once.

At shutdown, what could not be delivered in time is written to the disk spool (after the
privacy pipeline, never raw), and the next process that starts a worker sends it first.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from codeweaver_telemetry._internal import internal_errors, logger
from codeweaver_telemetry._types import Event, ExportResult, Sink

if TYPE_CHECKING:
    from codeweaver_telemetry._spool import Spool

__all__ = ["Worker"]

_FLUSH_BATCH = 100  # events per request while flushing
_YIELD_EVERY_S = 0.001  # how much pipeline work the worker does before yielding the GIL
_RESERVED_SLOTS = 8  # room beyond the bound for the library's own session events
_MIN_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 60.0


class Worker:
    """Moves events from the caller's thread to a sink through ``process``.

    Args:
        sink: where finished batches go.
        process: the privacy pipeline for one event (None drops it); given a drop callback.
        batch_size: events per export.
        interval_s: longest time an event waits before its batch is sent.
        max_queue: the most events held (waiting plus kept for retry).
    """

    def __init__(
        self,
        *,
        sink: Sink,
        process: Callable[[Event, Callable[[str], None]], Event | None],
        batch_size: int,
        interval_s: float,
        max_queue: int,
        spool: Spool | None = None,
    ) -> None:
        self._sink = sink
        self._spool = spool
        self._owner_pid = os.getpid()
        self._process = process
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._max_queue = max_queue
        self.dropped: collections.Counter[str] = collections.Counter()
        self.sent = 0
        self.consecutive_failures = 0
        """Exports that failed in a row (0 after a success): the heartbeat's health check."""
        self.spooled = 0
        """Events written to the disk spool at shutdown."""
        self._init_state()
        ref = weakref.WeakMethod(self._after_fork)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _init_state(self) -> None:
        # Re-entrant: capture() may run in a signal handler on a thread that is already
        # inside submit(); a plain lock would deadlock it.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._queue: collections.deque[Event] = collections.deque()
        self._retry: list[Event] = []  # finished events kept after a failed export
        self._exporting: list[Event] = []  # the finished batch the sink is working on
        self._in_flight = 0
        self._flush_gen = 0
        self._done_gen = 0  # last flush generation the worker has fully handled
        self._failed_gen = 0  # last flush generation whose export failed
        self._oldest_at: float | None = None
        self._backoff_until = 0.0
        self._backoff_s = _MIN_BACKOFF_S
        self._closed = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def _after_fork(self) -> None:
        self._init_state()

    # -- caller side ----------------------------------------------------------------------
    def submit(self, event: Event, *, reserved: bool = False) -> bool:
        """Queue an event without blocking; False if it was refused (full or closed).

        ``reserved`` events (the library's session summary) may use a few slots beyond the
        bound, so a queue filled by the app never costs the session its summary.
        """
        if self._pid != os.getpid():  # a fork without the at-fork hook
            self._init_state()
        with self._lock:
            if self._closed:
                self.dropped["shutdown"] += 1
                return False
            bound = self._max_queue + (_RESERVED_SLOTS if reserved else 0)
            if len(self._queue) + len(self._retry) + self._in_flight >= bound:
                self.dropped["queue_full"] += 1
                return False
            self._queue.append(event)
            first_of_batch = self._oldest_at is None
            if first_of_batch:
                self._oldest_at = time.monotonic()
            if self._thread is None:
                self._start()
            elif first_of_batch or len(self._queue) >= self._batch_size:
                self._cond.notify()  # an idle worker learns when this batch falls due
        return True

    @property
    def pending(self) -> int:
        """Events not yet delivered: waiting, in flight, or kept for retry."""
        with self._lock:
            return len(self._queue) + len(self._retry) + self._in_flight

    def flush(self, timeout_s: float) -> bool:
        """Ask the worker to send everything now; True if all was delivered in time."""
        if threading.current_thread() is self._thread:
            return False  # called from inside an export (a sink): it cannot wait on itself
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            if not self._queue and not self._retry and not self._in_flight:
                return True
            if self._thread is None or not self._thread.is_alive():
                if self._stopping:
                    return False
                self._start()
            self._flush_gen += 1
            gen = self._flush_gen
            self._cond.notify_all()
            while True:
                if self._done_gen >= gen:
                    return self._failed_gen < gen
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def shutdown(self, timeout_s: float) -> bool:
        """Flush, stop the thread, spool what is left, shut the sink; all within ``timeout_s``.

        With a spool, a part of the bound (a quarter, at most 0.2 s) is kept for writing
        the undelivered events to disk; the rest goes to the final flush. Idempotent.
        """
        timeout_s = max(0.0, timeout_s)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            if self._closed:
                return not (self._queue or self._retry)
            self._closed = True
        reserve = min(0.2, timeout_s / 4) if self._spool is not None else 0.0
        delivered = self.flush(timeout_s - reserve)
        with self._lock:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - reserve - time.monotonic()))
        with self._lock:  # what is still here has not been delivered
            raw, self._queue = list(self._queue), collections.deque()
            # A batch still in the sink's hands (a hanging host) is spooled too; PostHog
            # drops an event it already has by its uuid, so a late delivery is harmless.
            # Keyed by uuid: one half of a split batch can be in both lists.
            finished = list({e.uuid: e for e in (*self._exporting, *self._retry)}.values())
            self._retry = []
            lost = max(0, self._in_flight - len(self._exporting))
        if raw or finished:
            with internal_errors("spool"):
                self._save_undelivered(raw, finished, deadline)
        with internal_errors("sink shutdown"):
            self._sink.shutdown(max(0.0, deadline - time.monotonic()))
        if lost:
            self._count_drop_n("exit_timeout", lost)
        return delivered

    def _save_undelivered(self, raw: list[Event], finished: list[Event], deadline: float) -> None:
        """Spool what is left (raw events pass the pipeline first, as time allows)."""
        left = len(raw) + len(finished)
        if self._spool is not None:
            for index, event in enumerate(raw):
                if time.monotonic() >= deadline:
                    raw = raw[index:]
                    break
                done = self._process(event, self._count_drop)
                if done is not None:
                    finished.append(done)
            else:
                raw = []
            saved = self._spool.save(finished) if finished else 0
            if len(finished) > saved:
                self._count_drop_n("spool_full", len(finished) - saved)
            self.spooled += saved
            left = len(raw)
        if left:
            self._count_drop_n("exit_timeout", left)
            logger.info(
                "codeweaver_telemetry: %d events were not delivered before the exit bound", left
            )

    # -- worker side ----------------------------------------------------------------------
    def _start(self) -> None:
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="codeweaver-telemetry", daemon=True)
        self._thread.start()

    def _due(self, now: float) -> bool:
        if self._flush_gen > self._done_gen:
            return True
        if now < self._backoff_until:
            return False
        if len(self._queue) >= self._batch_size or self._retry:
            return True
        return self._oldest_at is not None and now - self._oldest_at >= self._interval_s

    def _wait_time(self, now: float) -> float | None:
        times = []
        if self._backoff_until > now:
            times.append(self._backoff_until - now)
        elif self._oldest_at is not None:
            times.append(max(0.0, self._oldest_at + self._interval_s - now))
        return min(times) if times else None

    def _load_spool(self) -> None:
        """Take events earlier runs could not deliver (at most half the queue): sent first.

        Only the process that built the worker loads: a forked child (a pool worker, often
        ended by a signal) would risk taking the spool with it.
        """
        if self._spool is None or os.getpid() != self._owner_pid:
            return
        with internal_errors("spool"):
            events = self._spool.load(limit=max(1, self._max_queue // 2))
            if events:
                with self._lock:
                    self._retry.extend(events)

    def _run(self) -> None:
        self._load_spool()
        while True:
            with self._lock:
                while not self._stopping and not self._due(time.monotonic()):
                    self._cond.wait(self._wait_time(time.monotonic()))
                if self._stopping and self._flush_gen <= self._done_gen:
                    return
                gen = self._flush_gen
                flushing = gen > self._done_gen
                # A flush (at exit above all) has little time: fewer, larger requests.
                size = max(self._batch_size, _FLUSH_BATCH) if flushing else self._batch_size
                raw = [self._queue.popleft() for _ in range(min(len(self._queue), size))]
                kept, self._retry = self._retry, []
                self._in_flight = len(raw) + len(kept)
                # The leftovers keep their age: the next one is due an interval after it
                # was captured (its wall-clock timestamp), not after this batch was taken.
                self._oldest_at = (
                    time.monotonic() - max(0.0, time.time() - self._queue[0].timestamp)
                    if self._queue
                    else None
                )
            ok = True
            with internal_errors("worker"):
                ok = self._export(kept + self._finish(raw))
            with self._lock:
                self._in_flight = 0
                self.consecutive_failures = 0 if ok else self.consecutive_failures + 1
                if not ok:
                    # The host's Retry-After (a sink may expose it) wins if it asks for longer.
                    asked = getattr(self._sink, "retry_after_s", 0.0)
                    wait = max(self._backoff_s, min(float(asked or 0.0), _MAX_BACKOFF_S))
                    self._backoff_until = time.monotonic() + wait
                    self._backoff_s = min(self._backoff_s * 2, _MAX_BACKOFF_S)
                else:
                    self._backoff_s = _MIN_BACKOFF_S
                    self._backoff_until = 0.0
                if flushing and (not ok or (not self._queue and not self._retry)):
                    if not ok:
                        self._failed_gen = gen
                    self._done_gen = gen
                self._cond.notify_all()

    def _finish(self, raw: Sequence[Event]) -> list[Event]:
        finished = []
        yielded = time.perf_counter()
        for event in raw:
            # The pipeline is pure Python: give the GIL back about every millisecond, so a
            # capturing thread never waits a whole switch interval (5 ms) behind a batch.
            # (sleep(0) costs a scheduler round trip, so not after every event.)
            if time.perf_counter() - yielded > _YIELD_EVERY_S:
                time.sleep(0)
                yielded = time.perf_counter()
            try:
                done = self._process(event, self._count_drop)
            except Exception as exc:  # the pipeline drops, it never passes an event on raw
                logger.warning(
                    "codeweaver_telemetry: an event was dropped (%s)", type(exc).__name__
                )
                self._count_drop("stage_error")
                continue
            if done is not None:
                finished.append(done)
        return finished

    def _count_drop(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] += 1

    def _export(self, batch: list[Event]) -> bool:
        if not batch:
            return True
        with self._lock:
            self._exporting = batch
        try:
            return self._export_part(batch)
        finally:
            with self._lock:
                self._exporting = []

    def _export_part(self, batch: list[Event]) -> bool:
        """Export ``batch`` (the whole or a half of a split); True when nothing is left."""
        try:
            result = self._sink.export(batch)
        except Exception as exc:  # a broken sink must not kill the thread
            logger.warning(
                "codeweaver_telemetry: the sink failed (%s); events kept for retry",
                type(exc).__name__,
            )
            result = ExportResult.RETRY
        if result is ExportResult.SUCCESS:
            self.sent += len(batch)
            return True
        if result is ExportResult.DROP:
            self._count_drop_n("sink_rejected", len(batch))
            return True
        if result is ExportResult.SPLIT:
            if len(batch) == 1:  # one event alone is too large: it can never be delivered
                self._count_drop_n("too_large", 1)
                return True
            middle = len(batch) // 2
            first = self._export_part(batch[:middle])
            second = self._export_part(batch[middle:])
            return first and second
        with self._lock:
            room = max(0, self._max_queue - len(self._queue) - len(self._retry))
            self._retry.extend(batch[:room])
            if len(batch) > room:
                self.dropped["queue_full"] += len(batch) - room
        return False

    def _count_drop_n(self, reason: str, n: int) -> None:
        with self._lock:
            self.dropped[reason] += n
