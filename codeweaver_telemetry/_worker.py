# SPDX-License-Identifier: MIT OR Apache-2.0
"""The background worker: a bounded queue, one daemon thread, batching and deadlines.

Queue policy, with a disk spool (the default): nothing is dropped short of the spool's
own bound. When the queue is full, the capturing thread runs the privacy pipeline on its
event itself (it never waits on the network or on the worker) and adds the finished event
to an overflow list; the worker sends that list with its next batch, and a full list
(:data:`~codeweaver_telemetry._delivery.MAX_BATCH` events) is written to the spool as
one segment. While the host is backing off (down, or rate limiting), the worker moves
queued events through the pipeline into the spool before the queue fills. Without a
spool, the *newest* event is refused and counted (``queue_full``), with one WARNING when
refusing starts and one summary when it stops, at most one pair a minute. A few slots
beyond the bound are kept for the library's session summary. The thread starts on the
first event (or at once when the spool holds events), is a daemon (it never keeps the
process alive), and is recreated in a forked child (the child starts with an empty queue:
the parent's events are the parent's to send).

The worker wakes when ``batch_size`` events are waiting, when ``interval_s`` has passed
since the oldest one arrived, or when asked to flush; it then sends everything waiting,
up to ``MAX_BATCH`` events per request. It runs each event through the privacy pipeline,
then hands the batch to the delivery layer (:mod:`codeweaver_telemetry._delivery`), which
owns the sink, retry and back-off, the host's rate limit, the spool, consent checks and
the lost-event counts. Between live batches, at the host's pace, the worker has it drain
the spool one claimed segment per request: what earlier runs (or this one) could not
deliver.

Fork safety: the thread's lazy imports (``prepare``, the sink's ``prepare()``) run under a
lock that ``os.fork()`` waits for (a bounded wait), so a child never inherits a half-done
import; the queue, locks and thread state are re-created in the child.

At shutdown (within one bound counted from its entry), what could not be delivered in time
is written to the spool (after the privacy pipeline, never raw).

Time and waiting come from one injectable clock (``clock``; the real one by default).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from codeweaver_telemetry._delivery import MAX_BATCH, SYSTEM_CLOCK, Clock, Delivery
from codeweaver_telemetry._internal import (
    fork_safe_imports,
    in_forked_child,
    internal_error,
    internal_errors,
    logger,
)
from codeweaver_telemetry._types import Event, HostState, Sink

if TYPE_CHECKING:
    from codeweaver_telemetry._spool import Spool

__all__ = ["Worker"]

_YIELD_EVERY_S = 0.001  # how much pipeline work the worker does before yielding the GIL
_RESERVED_SLOTS = 8  # room beyond the bound for the library's own session events
_OVERFLOW_REPORT_S = 60.0  # at most one "queue full" warning (and its summary) a minute


class Worker:
    """Moves events from the caller's thread to a sink through ``process``.

    Args:
        sink: where finished batches go.
        process: the privacy pipeline for one event (None drops it); given a drop callback.
        batch_size: events per export.
        interval_s: longest time an event waits before its batch is sent.
        max_queue: the most events held in memory (waiting plus kept for retry).
        spool: the disk spool for events that cannot be delivered yet.
        max_retries: failed tries after which an event goes to the spool.
        gate: True while the stored consent still lets this install send; asked before
            every export and every spool write.
        install_id: spooled events made for another install id are dropped, never sent.
        prepare: imports the thread needs, run once per thread before any work.
        on_revoked: told (once) when ``gate`` says no.
        clock: the time and the waits (a fake one in tests).
        host: the host's rate limit and outage, shared with the flag fetches.
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
        max_retries: int = 3,
        gate: Callable[[], bool] | None = None,
        install_id: str | None = None,
        prepare: Callable[[], None] | None = None,
        on_revoked: Callable[[], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        host: HostState | None = None,
    ) -> None:
        self._spool = spool
        self._owner_pid = os.getpid()
        self._process = process
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._max_queue = max_queue
        self._prepare = prepare
        self._clock = clock
        self._delivery = Delivery(
            sink,
            room=self._room,
            drop_queued=self._drop_queued,
            on_spooled=self._spooled,
            spool=spool,
            max_retries=max_retries,
            gate=gate,
            install_id=install_id,
            on_revoked=on_revoked,
            clock=clock,
            host=host,
        )
        self._init_state()
        in_forked_child(self._after_fork)

    def _init_state(self) -> None:
        # Re-entrant: capture() may run in a signal handler on a thread that is already
        # inside submit(); a plain lock would deadlock it. Shared with the delivery layer.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._delivery.reset(self._lock)
        self._queue: collections.deque[Event] = collections.deque()
        # Finished events from capturing threads that found the queue full (spool only).
        self._overflow_events: list[Event] = []
        self._flush_gen = 0
        self._done_gen = 0  # last flush generation the worker has fully handled
        self._failed_gen = 0  # last flush generation whose export failed
        self._oldest_at: float | None = None
        self._closed = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._warm = False  # the thread's imports are done
        self._pid = os.getpid()
        # The spool drain: only the process that built the worker drains.
        self._spool_pending = False
        # Queue-full reporting: one warning when refusing starts, one summary when it stops.
        self._overflowing = False
        self._overflow_unreported = 0
        self._overflow_warned = False
        self._overflow_next_at = 0.0

    def _after_fork(self) -> None:
        self._init_state()

    # -- counts (kept by the delivery layer) ---------------------------------------------------
    @property
    def dropped(self) -> collections.Counter[str]:
        """Events lost, by reason."""
        return self._delivery.lost

    @property
    def sent(self) -> int:
        """Events delivered."""
        return self._delivery.sent

    @property
    def consecutive_failures(self) -> int:
        """Exports that failed in a row (0 after a success): the heartbeat's health check."""
        return self._delivery.consecutive_failures

    @property
    def spooled(self) -> int:
        """Events written to the disk spool."""
        return self._delivery.spooled

    # -- caller side ----------------------------------------------------------------------
    def submit(self, event: Event, *, reserved: bool = False) -> bool:
        """Queue an event without waiting on the network; False if it was refused (closed,
        or full without a spool).

        ``reserved`` events (the library's session summary) may use a few slots beyond the
        bound, so a queue filled by the app never costs the session its summary.
        """
        if self._pid != os.getpid():  # a fork without the at-fork hook
            self._init_state()
        with self._lock:
            delivery = self._delivery
            if self._closed or delivery.revoked:
                delivery.record_lost_event("shutdown" if self._closed else "consent_off")
                return False
            bound = self._max_queue + (_RESERVED_SLOTS if reserved else 0)
            if len(self._queue) + delivery.held < bound:
                if self._overflowing:
                    self._overflow_ended()
                self._queue.append(event)
                first_of_batch = self._oldest_at is None
                if first_of_batch:
                    self._oldest_at = self._clock.monotonic()
                if self._thread is None:
                    self._start()
                elif first_of_batch or len(self._queue) >= self._batch_size:
                    self._cond.notify()  # an idle worker learns when this batch falls due
                return True
            if self._spool is None:
                delivery.record_lost_event("queue_full")
                self._overflow()
                return False
        return self._finish_here(event)

    def _finish_here(self, event: Event) -> bool:
        """The queue is full: run the pipeline on this thread and keep the finished event
        for the worker's next batch; a full overflow list goes to the spool as a segment."""
        delivery = self._delivery
        if not self._warm:  # the pipeline's imports, as the worker does them
            with fork_safe_imports(), internal_errors("worker start"):
                if self._prepare is not None:
                    self._prepare()
        try:
            done = self._process(event, delivery.record_lost_event)
        except Exception as exc:  # the pipeline drops, it never passes an event on raw
            logger.warning("codeweaver_telemetry: an event was dropped (%s)", type(exc).__name__)
            delivery.record_lost_event("stage_error")
            return True
        if done is None:
            return True
        with self._lock:
            if self._closed or delivery.revoked:  # shut or turned off meanwhile
                delivery.record_lost_event("shutdown" if self._closed else "consent_off")
                return False
            self._overflow_events.append(done)
            if len(self._overflow_events) < MAX_BATCH:
                if len(self._overflow_events) == 1:
                    self._cond.notify()  # a worker backing off may spool them
                return True
            segment, self._overflow_events = self._overflow_events, []
        with internal_errors("spool"):
            delivery.spool(segment)
        return True

    def _overflow(self) -> None:
        self._overflow_unreported += 1
        if self._overflowing:
            return
        self._overflowing = True
        now = self._clock.monotonic()
        if now >= self._overflow_next_at:
            self._overflow_next_at = now + _OVERFLOW_REPORT_S
            self._overflow_warned = True
            logger.warning(
                "codeweaver_telemetry: the event queue is full (%d events); new events are "
                "dropped until it drains (the host is slow or unreachable, or events are "
                "captured faster than they can be sent)",
                self._max_queue,
                extra={"codeweaver_rate_limited": True},
            )

    def _overflow_ended(self) -> None:
        self._overflowing = False
        if self._overflow_warned:
            self._report_overflow()

    def _report_overflow(self) -> None:
        if self._overflow_unreported:
            logger.warning(
                "codeweaver_telemetry: %d events were dropped because the event queue was full",
                self._overflow_unreported,
                extra={"codeweaver_rate_limited": True},
            )
        self._overflow_unreported = 0
        self._overflow_warned = False

    @property
    def pending(self) -> int:
        """Events not yet delivered: waiting, in flight, or kept for retry."""
        with self._lock:
            return len(self._queue) + self._delivery.held + len(self._overflow_events)

    def start(self) -> None:
        """Start the thread now, idle: its imports wait for its first piece of work, and
        the first event (a flag exposure, say) finds a thread to hand over to."""
        with self._lock:
            if self._thread is None and not self._closed and self._pid == os.getpid():
                self._start()

    def start_draining(self) -> None:
        """Start sending what the spool holds now, in the background, whatever is captured."""
        if self._spool is None or os.getpid() != self._owner_pid:
            return
        if not self._spool.has_files():
            return
        with self._lock:
            if self._closed:
                return
            self._spool_pending = True
            if self._thread is None:
                self._start()
            else:
                self._cond.notify()

    def request_flush(self) -> None:
        """Ask the worker to send what is queued now, without waiting for it."""
        with self._lock:
            if self._closed or not (
                self._queue or self._delivery.retrying or self._overflow_events
            ):
                return
            self._flush_gen += 1
            if self._thread is None or not self._thread.is_alive():
                self._start()
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Ask the worker to send everything now; True if all was delivered in time.

        Returns False at once when the host's rate limit outlasts the timeout: nothing can
        be sent before it ends (the worker sends once it does).
        """
        if threading.current_thread() is self._thread:
            return False  # called from inside an export (a sink): it cannot wait on itself
        clock = self._clock
        deadline = clock.monotonic() + max(0.0, timeout_s)
        with self._lock:
            if not self._queue and not self._delivery.held and not self._overflow_events:
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
                remaining = deadline - clock.monotonic()
                if remaining <= 0 or self._delivery.disabled_until >= deadline:
                    return False
                clock.wait(self._cond, remaining)

    def shutdown(self, timeout_s: float) -> bool:
        """Flush, stop the thread, spool what is left, shut the sink; all within ``timeout_s``.

        With a spool, a part of the bound (a quarter, at most 0.2 s) is kept for writing
        the undelivered events to disk; the rest goes to the final flush. Idempotent.
        """
        timeout_s = max(0.0, timeout_s)
        deadline = self._clock.monotonic() + timeout_s
        delivery = self._delivery
        with self._lock:
            if self._closed:
                return not (self._queue or delivery.retrying or self._overflow_events)
            self._closed = True
        reserve = min(0.2, timeout_s / 4) if self._spool is not None else 0.0
        delivered = self.flush(timeout_s - reserve)
        with self._lock:
            self._stopping = True
            delivery.stop()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - reserve - self._clock.monotonic()))
        with self._lock:  # what is still here has not been delivered
            raw, self._queue = list(self._queue), collections.deque()
            overflow, self._overflow_events = self._overflow_events, []
            if self._overflow_unreported:
                self._report_overflow()
        finished, lost = delivery.take_undelivered()
        finished.extend(overflow)
        if raw or finished:
            self._save_undelivered(raw, finished, deadline)
        delivery.shutdown_sink(deadline - self._clock.monotonic())
        delivery.record_lost_event("exit_timeout", lost)
        return delivered

    def _save_undelivered(self, raw: list[Event], finished: list[Event], deadline: float) -> None:
        """Spool what is left (raw events pass the pipeline first, as time allows)."""
        delivery = self._delivery
        left = len(raw) + len(finished)
        if delivery.has_spool and delivery.allowed():
            for index, event in enumerate(raw):
                if self._clock.monotonic() >= deadline:
                    raw = raw[index:]
                    break
                done = self._process(event, delivery.record_lost_event)
                if done is not None:
                    finished.append(done)
            else:
                raw = []
            delivery.spool(finished)
            left = len(raw)
        elif delivery.revoked:
            delivery.record_lost_event("consent_off", left)
            return
        if left:
            delivery.record_lost_event("exit_timeout", left)
            logger.info(
                "codeweaver_telemetry: %d events were not delivered before the exit bound", left
            )

    # -- told by the delivery layer (under the lock) ---------------------------------------------
    def _room(self) -> int:
        return self._max_queue - len(self._queue)

    def _drop_queued(self) -> int:
        """Consent was withdrawn: drop what is queued, drain no more, wake any waiter."""
        dropped = len(self._queue) + len(self._overflow_events)
        self._queue.clear()
        self._overflow_events = []
        self._oldest_at = None
        self._spool_pending = False
        self._cond.notify_all()
        return dropped

    def _spooled(self) -> None:
        if os.getpid() == self._owner_pid and not self._closed:
            self._spool_pending = True

    # -- worker side ----------------------------------------------------------------------
    def _start(self) -> None:
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="codeweaver-telemetry", daemon=True)
        self._thread.start()

    def _warm_up(self) -> None:
        """Do the thread's lazy imports at once, under the lock os.fork() waits for."""
        with fork_safe_imports(), internal_errors("worker start"):
            if self._prepare is not None:
                self._prepare()
            self._delivery.prepare()
            if self._spool is not None:
                import codeweaver_telemetry._files  # noqa: F401  (used on the spool's paths)
        self._warm = True

    def _live_due(self, now: float) -> bool:
        if self._flush_gen > self._done_gen:  # a flush goes before the back-off ends
            return now >= self._delivery.disabled_until
        if now < self._delivery.ready_at:
            return False
        if len(self._queue) >= self._batch_size or self._delivery.retrying or self._overflow_events:
            return True
        return self._oldest_at is not None and now - self._oldest_at >= self._interval_s

    def _spill_due(self, now: float) -> bool:
        """The host is backing off and the queue is half full: move events to the spool
        before the capturing threads have to."""
        return (
            self._spool is not None
            and not self._stopping
            and now < self._delivery.ready_at
            and self._flush_gen <= self._done_gen
            and len(self._queue) >= max(self._batch_size, self._max_queue // 2)
            and not self._delivery.revoked
        )

    def _drain_due(self, now: float) -> bool:
        return (
            self._spool_pending
            and not self._stopping
            and not self._delivery.revoked
            and now >= self._delivery.ready_at
        )

    def _wait_time(self, now: float) -> float | None:
        delivery = self._delivery
        flushing = self._flush_gen > self._done_gen
        ready = delivery.disabled_until if flushing else delivery.ready_at
        if ready > now:
            return ready - now
        if self._oldest_at is not None:
            return max(0.0, self._oldest_at + self._interval_s - now)
        return None

    def _run(self) -> None:
        clock = self._clock
        while True:
            with self._lock:
                while True:
                    now = clock.monotonic()
                    live = self._live_due(now)
                    spill = not live and self._spill_due(now)
                    if live or spill or self._stopping or self._drain_due(now):
                        break
                    clock.wait(self._cond, self._wait_time(now))
                # Stopping: only a flush still under way (and allowed to send) goes on.
                if self._stopping and (self._flush_gen <= self._done_gen or not live):
                    return
            if not self._warm:
                self._warm_up()
            if live:
                self._send_live()
            elif spill:
                self._spill()
            else:
                self._drain()

    def _spill(self) -> None:
        """Run a batch of queued events through the pipeline into the spool."""
        with self._lock:
            raw = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
            if not self._queue:
                self._oldest_at = None
        with internal_errors("spool"):
            self._delivery.spool(self._finish(raw))

    def _drain(self) -> None:
        try:
            more = self._delivery.drain_once()
        except Exception as exc:  # a spool this process cannot use: stop, never spin
            internal_error("spool", exc)
            more = False
        if not more:
            with self._lock:
                self._spool_pending = False

    def _send_live(self) -> None:
        with self._lock:
            gen = self._flush_gen
            flushing = gen > self._done_gen
            # Everything waiting goes, up to MAX_BATCH a request: fewer, larger requests.
            overflow = self._overflow_events[:MAX_BATCH]
            del self._overflow_events[:MAX_BATCH]
            size = max(0, MAX_BATCH - len(overflow))
            raw = [self._queue.popleft() for _ in range(min(len(self._queue), size))]
            kept = self._delivery.take_retry(len(raw) + len(overflow))
            # The leftovers keep their age: the next one is due an interval after it
            # was captured (its wall-clock timestamp), not after this batch was taken.
            self._oldest_at = (
                self._clock.monotonic() - max(0.0, time.time() - self._queue[0].timestamp)
                if self._queue
                else None
            )
        batch: list[Event] = kept + overflow
        with internal_errors("worker"):
            batch += self._finish(raw)
        ok = self._delivery.deliver(batch)
        with self._lock:
            if flushing and (not ok or (not self._queue and not self._delivery.retrying)):
                if not ok:
                    self._failed_gen = gen
                self._done_gen = gen
            self._cond.notify_all()

    def _finish(self, raw: Sequence[Event]) -> list[Event]:
        finished = []
        yielded = time.perf_counter()
        record = self._delivery.record_lost_event
        for event in raw:
            # The pipeline is pure Python: give the GIL back about every millisecond, so a
            # capturing thread never waits a whole switch interval (5 ms) behind a batch.
            # (sleep(0) costs a scheduler round trip, so not after every event.)
            if time.perf_counter() - yielded > _YIELD_EVERY_S:
                time.sleep(0)
                yielded = time.perf_counter()
            try:
                done = self._process(event, record)
            except Exception as exc:  # the pipeline drops, it never passes an event on raw
                logger.warning(
                    "codeweaver_telemetry: an event was dropped (%s)", type(exc).__name__
                )
                record("stage_error")
                continue
            if done is not None:
                finished.append(done)
        return finished
