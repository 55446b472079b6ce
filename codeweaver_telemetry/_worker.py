# SPDX-License-Identifier: MIT OR Apache-2.0
"""The background worker: a bounded queue, one daemon thread, batching, retry, the spool.

Queue policy: when the queue is full, the *newest* event is refused and counted
(``queue_full``); the caller is never blocked. One WARNING is logged when refusing starts
and one summary with the count when it stops, at most one pair a minute. A few slots
beyond the bound are kept for the library's session summary. The thread starts on the
first event (or at once when the spool holds events), is a daemon (it never keeps the
process alive), and is recreated in a forked child (the child starts with an empty queue:
the parent's events are the parent's to send).

The worker wakes when ``batch_size`` events are waiting, when ``interval_s`` has passed
since the oldest one arrived, or when asked to flush (a flush sends up to 100 events per
request). It runs each event through the privacy pipeline, then hands the batch to the
sink. An event the sink could not deliver (RETRY) is kept in memory and tried again with
exponential back-off (1 s doubling to 60 s, longer if the host's Retry-After asks); after
``max_retries`` failed tries it goes to the disk spool instead. Between live batches, at
the host's pace, the worker drains the spool: what earlier runs (or this one) could not
deliver.

Consent is checked again before every export and every write to the spool (``gate``):
once the user's stored choice no longer allows this install to send (``disable`` in
another shell, ``delete``, a new install id), everything held is dropped, nothing more is
sent or spooled, and ``on_revoked`` is told.

Fork safety: the thread's lazy imports (``prepare``, the sink's ``prepare()``) run under a
lock that ``os.fork()`` waits for (a bounded wait), so a child never inherits a half-done
import; the queue, locks and thread state are re-created in the child.

At shutdown, what could not be delivered in time is written to the spool (after the
privacy pipeline, never raw).
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from codeweaver_telemetry._internal import (
    fork_safe_imports,
    in_forked_child,
    internal_error,
    internal_errors,
    logger,
)
from codeweaver_telemetry._types import Event, ExportResult, Sink

if TYPE_CHECKING:
    from codeweaver_telemetry._spool import Claim, Spool

__all__ = ["Worker"]

_FLUSH_BATCH = 100  # events per request while flushing or draining the spool
_YIELD_EVERY_S = 0.001  # how much pipeline work the worker does before yielding the GIL
_RESERVED_SLOTS = 8  # room beyond the bound for the library's own session events
_MIN_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 60.0
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
    ) -> None:
        self._sink = sink
        self._spool = spool
        self._owner_pid = os.getpid()
        self._process = process
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._max_queue = max_queue
        self._max_retries = max_retries
        self._gate = gate
        self._install_id = install_id
        self._prepare = prepare
        self._on_revoked = on_revoked
        self.dropped: collections.Counter[str] = collections.Counter()
        self.sent = 0
        self.consecutive_failures = 0
        """Exports that failed in a row (0 after a success): the heartbeat's health check."""
        self.spooled = 0
        """Events written to the disk spool."""
        self._revoked = False
        self._init_state()
        in_forked_child(self._after_fork)

    def _init_state(self) -> None:
        # Re-entrant: capture() may run in a signal handler on a thread that is already
        # inside submit(); a plain lock would deadlock it.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._queue: collections.deque[Event] = collections.deque()
        self._retry: list[Event] = []  # finished events kept after a failed export
        self._exporting: list[Event] = []  # the finished live batch the sink is working on
        self._in_flight = 0
        self._flush_gen = 0
        self._done_gen = 0  # last flush generation the worker has fully handled
        self._failed_gen = 0  # last flush generation whose export failed
        self._oldest_at: float | None = None
        self._backoff_until = 0.0
        self._backoff_s = _MIN_BACKOFF_S
        self._closed = False
        self._stopping = False
        self._saved_at_exit = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        # The spool drain: only the process that built the worker drains.
        self._spool_pending = False
        self._spool_saves = 0  # files this process spooled (so a drain knows to look again)
        self._claim: Claim | None = None
        self._claim_pos = 0
        # Queue-full reporting: one warning when refusing starts, one summary when it stops.
        self._overflowing = False
        self._overflow_unreported = 0
        self._overflow_warned = False
        self._overflow_next_at = 0.0

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
            if self._closed or self._revoked:
                self.dropped["shutdown" if self._closed else "consent_off"] += 1
                return False
            bound = self._max_queue + (_RESERVED_SLOTS if reserved else 0)
            if len(self._queue) + len(self._retry) + self._in_flight >= bound:
                self.dropped["queue_full"] += 1
                self._overflow()
                return False
            if self._overflowing:
                self._overflow_ended()
            self._queue.append(event)
            first_of_batch = self._oldest_at is None
            if first_of_batch:
                self._oldest_at = time.monotonic()
            if self._thread is None:
                self._start()
            elif first_of_batch or len(self._queue) >= self._batch_size:
                self._cond.notify()  # an idle worker learns when this batch falls due
        return True

    def _overflow(self) -> None:
        self._overflow_unreported += 1
        if self._overflowing:
            return
        self._overflowing = True
        now = time.monotonic()
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
            return len(self._queue) + len(self._retry) + self._in_flight

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
            if self._closed or not (self._queue or self._retry):
                return
            self._flush_gen += 1
            if self._thread is None or not self._thread.is_alive():
                self._start()
            self._cond.notify_all()

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
            self._saved_at_exit = True  # a late answer for these must not spool them again
            lost = max(0, self._in_flight - len(self._exporting))
            claim, self._claim = self._claim, None
            unsent = claim.events[self._claim_pos :] if claim is not None else []
            if self._overflow_unreported:
                self._report_overflow()
        if claim is not None:
            self._return_claim(claim, unsent)
        if raw or finished:
            self._save_undelivered(raw, finished, deadline)
        with internal_errors("sink shutdown"):
            self._sink.shutdown(max(0.0, deadline - time.monotonic()))
        if lost:
            self._count_drop_n("exit_timeout", lost)
        return delivered

    def _save_undelivered(self, raw: list[Event], finished: list[Event], deadline: float) -> None:
        """Spool what is left (raw events pass the pipeline first, as time allows)."""
        left = len(raw) + len(finished)
        if self._spool is not None and self._allowed():
            for index, event in enumerate(raw):
                if time.monotonic() >= deadline:
                    raw = raw[index:]
                    break
                done = self._process(event, self._count_drop)
                if done is not None:
                    finished.append(done)
            else:
                raw = []
            self._to_spool(finished)
            left = len(raw)
        elif self._revoked:
            self._count_drop_n("consent_off", left)
            return
        if left:
            self._count_drop_n("exit_timeout", left)
            logger.info(
                "codeweaver_telemetry: %d events were not delivered before the exit bound", left
            )

    def _to_spool(self, events: Sequence[Event], *, returned: Claim | None = None) -> None:
        """Write finished events to the spool; count and explain what it could not keep.

        ``returned``: the claim these events come from (handed back): they are not counted
        as newly spooled, and its file does not count against the spool's bound.
        """
        if not events or self._spool is None:
            return
        if not self._allowed():
            self._count_drop_n("consent_off", len(events))
            return
        what = "spooled" if returned else "undelivered"
        try:
            saved = self._spool.save(events, replacing=returned.path if returned else None)
        except OSError as exc:
            from codeweaver_telemetry._files import describe_os_error

            self._count_drop_n("spool_error", len(events))
            logger.warning(
                "codeweaver_telemetry: %d %s events were lost: they could not be written to "
                "the spool in %s (%s)",
                len(events),
                what,
                self._spool.directory,
                describe_os_error(exc),
            )
            return
        if len(events) > saved:
            self._count_drop_n("spool_full", len(events) - saved)
            logger.warning(
                "codeweaver_telemetry: %d %s events were dropped: the spool in %s is full "
                "(%d bytes at most)",
                len(events) - saved,
                what,
                self._spool.directory,
                self._spool.max_bytes,
            )
        if saved:
            with self._lock:
                if not returned:
                    self.spooled += saved
                self._spool_saves += 1
                if os.getpid() == self._owner_pid and not self._closed:
                    self._spool_pending = True

    def _return_claim(self, claim: Claim, unsent: Sequence[Event]) -> None:
        """Hand a claimed spool file back with what was not sent (nothing once revoked)."""
        with internal_errors("spool"):
            try:
                self._to_spool(unsent, returned=claim)
            finally:
                claim.done()

    # -- consent ----------------------------------------------------------------------------
    def _allowed(self) -> bool:
        """Ask the gate; on a "no", drop everything held and stop for good."""
        if self._revoked:
            return False
        gate = self._gate
        if gate is None:
            return True
        try:
            allowed = gate()
        except Exception:  # a gate that cannot answer fails closed
            allowed = False
        if not allowed:
            self._revoke()
        return allowed

    def _revoke(self) -> None:
        with self._lock:
            if self._revoked:
                return
            self._revoked = True
            held = len(self._queue) + len(self._retry)
            self._queue.clear()
            self._retry = []
            self._oldest_at = None
            self._spool_pending = False
            claim, self._claim = self._claim, None
            self._cond.notify_all()
        if claim is not None:
            held += len(claim.events) - self._claim_pos
            claim.done()  # made for an install that may no longer send: never sent
        self._count_drop_n("consent_off", held)
        logger.info(
            "codeweaver_telemetry: telemetry was turned off (the stored choice changed); "
            "%d events held were dropped",
            held,
        )
        if self._on_revoked is not None:
            with internal_errors("consent"):
                self._on_revoked()

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
            prepare = getattr(self._sink, "prepare", None)
            if callable(prepare):
                prepare()
            if self._spool is not None:
                import codeweaver_telemetry._files  # noqa: F401  (used on the spool's paths)

    def _live_due(self, now: float) -> bool:
        if self._flush_gen > self._done_gen:
            return True
        if now < self._backoff_until:
            return False
        if len(self._queue) >= self._batch_size or self._retry:
            return True
        return self._oldest_at is not None and now - self._oldest_at >= self._interval_s

    def _drain_due(self, now: float) -> bool:
        return (
            self._spool_pending
            and not self._stopping
            and not self._revoked
            and now >= self._backoff_until
        )

    def _wait_time(self, now: float) -> float | None:
        if self._backoff_until > now:
            return self._backoff_until - now
        if self._oldest_at is not None:
            return max(0.0, self._oldest_at + self._interval_s - now)
        return None

    def _run(self) -> None:
        self._warm_up()
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    if self._stopping or self._live_due(now) or self._drain_due(now):
                        break
                    self._cond.wait(self._wait_time(now))
                if self._stopping and self._flush_gen <= self._done_gen:
                    return
                live = self._live_due(time.monotonic())
            if live:
                self._send_live()
            else:
                try:
                    self._drain_once()
                except Exception as exc:  # a spool this process cannot use: stop, never spin
                    internal_error("spool", exc)
                    with self._lock:
                        self._spool_pending = False

    def _send_live(self) -> None:
        with self._lock:
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
        left: list[Event] = []
        with internal_errors("worker"):
            batch = kept + self._finish(raw)
            if batch and not self._allowed():
                self._count_drop_n("consent_off", len(batch))
            else:
                left = self._export(batch)
        ok = not left and not self._revoked
        exhausted: list[Event] = []
        with self._lock:
            self._in_flight = 0
            if left and not self._revoked and not self._saved_at_exit:
                for event in left:
                    event.attempts += 1
                if self._spool is not None:
                    exhausted = [e for e in left if e.attempts > self._max_retries]
                    left = [e for e in left if e.attempts <= self._max_retries]
                room = max(0, self._max_queue - len(self._queue) - len(self._retry))
                self._retry.extend(left[:room])
                overflow = left[room:]
                if overflow and self._spool is not None:
                    exhausted.extend(overflow)
                elif overflow:
                    self.dropped["queue_full"] += len(overflow)
            self._after_export(ok)
            if flushing and (not ok or (not self._queue and not self._retry)):
                if not ok:
                    self._failed_gen = gen
                self._done_gen = gen
            self._cond.notify_all()
        if exhausted:  # tried max_retries times: the disk keeps them, not the memory
            with internal_errors("spool"):
                self._to_spool(exhausted)

    def _after_export(self, ok: bool) -> None:
        """Back-off bookkeeping after one export (under the lock)."""
        self.consecutive_failures = 0 if ok else self.consecutive_failures + 1
        if ok:
            self._backoff_s = _MIN_BACKOFF_S
            self._backoff_until = 0.0
            return
        # The host's Retry-After (a sink may expose it) wins if it asks for longer.
        asked = getattr(self._sink, "retry_after_s", 0.0)
        wait = max(self._backoff_s, min(float(asked or 0.0), _MAX_BACKOFF_S))
        self._backoff_until = time.monotonic() + wait
        self._backoff_s = min(self._backoff_s * 2, _MAX_BACKOFF_S)

    def _drain_once(self) -> None:
        """Send one batch from the spool (claiming the next file when needed)."""
        spool = self._spool
        if spool is None:
            return
        claim = self._claim
        if claim is None:
            with self._lock:
                saves = self._spool_saves
            install_id = self._install_id
            claim = spool.claim(
                keep=None if install_id is None else lambda e: e.distinct_id == install_id
            )
            with self._lock:
                if claim is None:
                    # Unless this run spooled more meanwhile, the spool is empty for now.
                    self._spool_pending = self._spool_saves != saves
                    return
                take = not (self._stopping or self._revoked)
                if take:
                    self._claim, self._claim_pos = claim, 0
            if not take:  # shutdown came meanwhile: put it back
                self._return_claim(claim, claim.events)
                return
        batch = claim.events[self._claim_pos : self._claim_pos + _FLUSH_BATCH]
        if not batch:
            with self._lock:
                if self._claim is claim:
                    self._claim = None
            claim.done()
            return
        if not self._allowed():
            return
        left = self._export(batch, live=False)
        finished = False
        with self._lock:
            if self._claim is not claim:  # shutdown took the claim back meanwhile
                return
            if not left:
                self._claim_pos += len(batch)
                finished = self._claim_pos >= len(claim.events)
                if finished:
                    self._claim = None
            else:  # what was delivered of a split batch is not sent twice
                delivered = {e.uuid for e in batch} - {e.uuid for e in left}
                rest = [e for e in batch if e.uuid not in delivered]
                claim.events[self._claim_pos : self._claim_pos + len(batch)] = rest
            self._after_export(not left)
            self._cond.notify_all()
        if finished:
            claim.done()

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

    def _export(self, batch: list[Event], *, live: bool = True) -> list[Event]:
        """Export ``batch``; returns the events still to deliver (empty when done)."""
        if not batch:
            return []
        if live:
            with self._lock:
                self._exporting = batch
        try:
            return self._export_part(batch)
        finally:
            if live:
                with self._lock:
                    self._exporting = []

    def _export_part(self, batch: list[Event]) -> list[Event]:
        """Export ``batch`` (the whole or a half of a split); returns what is left."""
        try:
            result = self._sink.export(batch)
        except Exception as exc:  # a broken sink must not kill the thread
            logger.warning(
                "codeweaver_telemetry: the sink failed (%s); events kept for retry",
                type(exc).__name__,
            )
            result = ExportResult.RETRY
        if result is ExportResult.SUCCESS:
            with self._lock:
                self.sent += len(batch)
            return []
        if result is ExportResult.DROP:
            self._count_drop_n("sink_rejected", len(batch))
            return []
        if result is ExportResult.SPLIT:
            if len(batch) == 1:  # one event alone is too large: it can never be delivered
                self._count_drop_n("too_large", 1)
                return []
            middle = len(batch) // 2
            return self._export_part(batch[:middle]) + self._export_part(batch[middle:])
        return list(batch)

    def _count_drop_n(self, reason: str, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            self.dropped[reason] += n
