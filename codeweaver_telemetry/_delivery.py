# SPDX-License-Identifier: MIT OR Apache-2.0
"""The delivery layer: one sink, retry and back-off, the host's rate limit, the spool.

The worker hands it finished batches; it owns everything after that:

* **Export** through the sink. A sink that raises counts as RETRY; a SPLIT (HTTP 413) is
  sent again in halves, and one event alone that is still too large is dropped
  (``too_large``).
* **Retry and back-off.** Events the sink could not deliver are kept in memory (within
  the worker's bound) and tried again after an exponential back-off (1 s doubling to
  60 s); after ``max_retries`` failed tries they go to the disk spool instead. A flush
  may try before the back-off ends (as an explicit request to send now). One WARNING
  says when the host stops answering and one when it answers again, however long the
  outage and however many events wait meanwhile (a single failed export, a blip, says
  nothing: the host counts as down once the retry has failed too).
* **The host's rate limit, for the whole client.** A RETRY answer can carry the host's
  ``Retry-After`` (``result.retry_after``; or, from sinks that predate it, the sink's
  ``retry_after_s`` attribute). No request of any kind (live batch, flush, the other
  half of a split, spool drain) is made before :attr:`Delivery.disabled_until`.
* **The spool**: what cannot be delivered is handed to it, and the worker drains it
  (one claimed segment per request, :meth:`Delivery.drain_once`) between live batches.
  When it is full its oldest events make room (counted as ``spool_full``, with one
  WARNING per episode).
* **Consent**, asked again before every export and every spool write (``gate``): once
  it says no, everything held is dropped and nothing more is sent or spooled.
* **Lost-event counts by reason** (:meth:`Delivery.record_lost_event`), which
  ``stats()["dropped"]`` reports.

It shares the worker's re-entrant lock, so the events held (queued plus kept here) are
counted exactly against the queue bound, and a signal handler that captures while this
thread holds the lock can never meet a lock-order inversion.

Time and waiting come from one :class:`Clock` (the real one unless a test passes a fake).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from codeweaver_telemetry._internal import internal_errors, logger
from codeweaver_telemetry._types import Event, ExportResult, HostState, Sink

if TYPE_CHECKING:
    from codeweaver_telemetry._spool import Claim, Spool

__all__ = ["MAX_BATCH", "SYSTEM_CLOCK", "Clock", "Delivery"]

MAX_BATCH = 1000
"""The most events one request carries (a backlog, a flush, one spool segment); a host
that answers 413 gets the batch again in halves."""
_MIN_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 60.0  # also the longest Retry-After honoured
_DOWN_AFTER = 2  # failed exports in a row after which the host counts as down


class _Waitable(Protocol):
    def wait(self, timeout: float | None = None) -> bool: ...


class Clock(Protocol):
    """Where the worker and the delivery layer read the time and wait."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def wait(self, waitable: _Waitable, timeout: float | None) -> bool:
        """Wait on a condition (its lock held) or an event, at most ``timeout`` seconds."""
        ...


class _SystemClock:
    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, waitable: _Waitable, timeout: float | None) -> bool:
        return waitable.wait(timeout)


SYSTEM_CLOCK: Clock = _SystemClock()
"""The real clock."""


class Delivery:
    """Delivers finished batches through ``sink`` for one worker.

    Args:
        sink: where finished batches go.
        spool: the disk spool for events that cannot be delivered yet.
        max_retries: failed tries after which an event goes to the spool.
        gate: True while the stored consent still lets this install send.
        install_id: spooled events made for another install id are dropped, never sent.
        clock: the time and the waits.
        host: the host's state, shared with the flag fetches (a new one when not given).
        room: how many events the worker's bound leaves for events kept for retry (asked
            under the lock).
        drop_queued: consent was withdrawn: the worker drops what it holds (under the
            lock) and says how many.
        on_spooled: the spool was written to (under the lock): the worker may drain it.
        on_revoked: told (once) when ``gate`` says no.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        room: Callable[[], int],
        drop_queued: Callable[[], int],
        on_spooled: Callable[[], None],
        spool: Spool | None = None,
        max_retries: int = 3,
        gate: Callable[[], bool] | None = None,
        install_id: str | None = None,
        on_revoked: Callable[[], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        host: HostState | None = None,
    ) -> None:
        self._sink = sink
        self.host = host if host is not None else HostState()
        """The host's rate limit and outage, shared with the flag fetches."""
        self._spool = spool
        self._max_retries = max_retries
        self._gate = gate
        self._install_id = install_id
        self._clock = clock
        self._room = room
        self._drop_queued = drop_queued
        self._on_spooled = on_spooled
        self._on_revoked = on_revoked
        self.lost: collections.Counter[str] = collections.Counter()
        """Events lost, by reason (``stats()["dropped"]``)."""
        self.sent = 0
        self.consecutive_failures = 0
        """Exports that failed in a row (0 after a success): the heartbeat's health check."""
        self.spooled = 0
        """Events written to the disk spool."""
        self.revoked = False
        """The gate said no: nothing more is sent or spooled, for good."""
        self.reset(threading.RLock())

    def reset(self, lock: threading.RLock) -> None:
        """Start afresh under ``lock`` (the worker's; renewed in a forked child).

        The counts and a withdrawn consent carry over; what is held, the back-off, the rate
        limit and a claimed spool file are the parent's and are forgotten.
        """
        self._lock = lock
        self._retry: list[Event] = []  # finished events kept after a failed export
        self._exporting: list[Event] = []  # the finished live batch the sink is working on
        self._in_flight = 0  # events the worker took for the live batch under way
        self.held = 0
        """Events kept for retry plus those in flight (one read: exact under the lock)."""
        self.retry_at = 0.0
        """The back-off: scheduled sends and the spool drain wait for it; a flush may not."""
        self.host.paused_until = 0.0
        self.host.down_since = None
        self._backoff_s = _MIN_BACKOFF_S
        self._stopping = False
        self._saved_at_exit = False
        self._spool_saves = 0  # files written (so a drain knows to look again)
        self._claim: Claim | None = None
        self._claim_pos = 0
        self._spool_full = False  # an episode of dropping the spool's oldest events

    # -- state the worker reads ---------------------------------------------------------------
    @property
    def retrying(self) -> int:
        """Events kept for another try."""
        return len(self._retry)

    @property
    def disabled_until(self) -> float:
        """The host's rate limit (its Retry-After, from any request of this client): no
        request of any kind before it."""
        return self.host.paused_until

    @property
    def ready_at(self) -> float:
        """When a scheduled send (or a spool drain) may go: after the back-off and the rate
        limit."""
        return max(self.retry_at, self.disabled_until)

    @property
    def has_spool(self) -> bool:
        """Undeliverable events can go to a disk spool."""
        return self._spool is not None

    def record_lost_event(self, reason: str, quantity: int = 1) -> None:
        """Count ``quantity`` events lost for ``reason``."""
        if quantity <= 0:
            return
        with self._lock:
            self.lost[reason] += quantity

    def prepare(self) -> None:
        """The sink's lazy imports (on the worker thread, under the fork-safe import lock)."""
        prepare = getattr(self._sink, "prepare", None)
        if callable(prepare):
            prepare()

    # -- consent ------------------------------------------------------------------------------
    def allowed(self) -> bool:
        """Ask the gate; on a "no", drop everything held and stop for good."""
        if self.revoked:
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
            if self.revoked:
                return
            self.revoked = True
            held = len(self._retry) + self._drop_queued()
            self._retry = []
            self.held = self._in_flight
            claim, self._claim = self._claim, None
        if claim is not None:
            held += len(claim.events) - self._claim_pos
            claim.done()  # made for an install that may no longer send: never sent
        self.record_lost_event("consent_off", held)
        logger.info(
            "codeweaver_telemetry: telemetry was turned off (the stored choice changed); "
            "%d events held were dropped",
            held,
        )
        if self._on_revoked is not None:
            with internal_errors("consent"):
                self._on_revoked()

    # -- live batches -------------------------------------------------------------------------
    def take_retry(self, incoming: int) -> list[Event]:
        """Hand the events kept for retry to the next live batch (``incoming`` more events
        join them); they are in flight until :meth:`deliver` returns."""
        with self._lock:
            kept, self._retry = self._retry, []
            self._in_flight = incoming + len(kept)
            self.held = self._in_flight
            return kept

    def deliver(self, batch: list[Event]) -> bool:
        """Export a live batch; True if it was all delivered (or dropped for good).

        What the sink could not deliver is kept for retry, or spooled once tried
        ``max_retries`` times (or when the bound has no room for it); then the back-off
        is set (or reset after a success).
        """
        left: list[Event] = []
        with internal_errors("worker"):
            if batch and not self.allowed():
                self.record_lost_event("consent_off", len(batch))
            else:
                left = self._export(batch, live=True)
        ok = not left and not self.revoked
        exhausted: list[Event] = []
        with self._lock:
            self._in_flight = 0
            if left and not self.revoked and not self._saved_at_exit:
                exhausted = self._keep(left)
            self.held = len(self._retry)
            self._after_export(ok)
        if exhausted:  # tried max_retries times: the disk keeps them, not the memory
            with internal_errors("spool"):
                self.spool(exhausted)
        return ok

    def _keep(self, left: list[Event]) -> list[Event]:
        """Keep ``left`` for another try (under the lock); returns what goes to the spool."""
        for event in left:
            event.attempts += 1
        exhausted: list[Event] = []
        if self._spool is not None:
            exhausted = [e for e in left if e.attempts > self._max_retries]
            left = [e for e in left if e.attempts <= self._max_retries]
        room = max(0, self._room() - len(self._retry))
        self._retry.extend(left[:room])
        overflow = left[room:]
        if overflow and self._spool is not None:
            exhausted.extend(overflow)
        elif overflow:
            self.lost["queue_full"] += len(overflow)
        return exhausted

    def _after_export(self, ok: bool) -> None:
        """Back-off bookkeeping after one export (under the lock)."""
        self.consecutive_failures = 0 if ok else self.consecutive_failures + 1
        now = self._clock.monotonic()
        if ok:
            self._backoff_s = _MIN_BACKOFF_S
            self.retry_at = 0.0
            down_since = self.host.down_since
            if down_since is not None:
                logger.warning(
                    "codeweaver_telemetry: the telemetry host answers again (after %.0f s); "
                    "the events kept meanwhile are being sent",
                    now - down_since,
                )
                self.host.down_since = None
            return
        # One failure may be a blip (a slow answer, a dropped connection): the host counts
        # as down (one WARNING; flag fetches wait) once the retry has failed too.
        if self.host.down_since is None and self.consecutive_failures >= _DOWN_AFTER:
            self.host.down_since = now
            logger.warning(
                "codeweaver_telemetry: the telemetry host does not answer; events are kept "
                "(in memory, then in the disk spool) and sent when it does"
                if self._spool is not None
                else "codeweaver_telemetry: the telemetry host does not answer; events are "
                "kept in memory (within the queue's bound) and sent when it does"
            )
        self.retry_at = now + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, _MAX_BACKOFF_S)

    # -- the sink -----------------------------------------------------------------------------
    def _export(self, batch: list[Event], *, live: bool) -> list[Event]:
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
        if self._clock.monotonic() < self.disabled_until:
            return list(batch)  # the host asked for a pause: no request until it ends
        try:
            result = self._sink.export(batch)
        except Exception as exc:  # a broken sink must not kill the thread
            logger.warning(
                "codeweaver_telemetry: the sink failed (%s); events kept for retry",
                type(exc).__name__,
            )
            result = ExportResult.RETRY
        if result == ExportResult.SUCCESS:
            with self._lock:
                self.sent += len(batch)
            return []
        if result == ExportResult.DROP:
            self.record_lost_event("sink_rejected", len(batch))
            return []
        if result == ExportResult.SPLIT:
            if len(batch) == 1:  # one event alone is too large: it can never be delivered
                self.record_lost_event("too_large", 1)
                return []
            middle = len(batch) // 2
            return self._export_part(batch[:middle]) + self._export_part(batch[middle:])
        self._rate_limit(result)
        return list(batch)

    def _rate_limit(self, result: object) -> None:
        """Honour the Retry-After a RETRY carries (or, failing that, the sink's attribute)."""
        asked = getattr(result, "retry_after", None)
        if asked is None:
            asked = getattr(self._sink, "retry_after_s", None)
        try:
            wait = float(asked or 0.0)
        except (TypeError, ValueError):
            return
        if not wait > 0:  # also NaN
            return
        with self._lock:
            self.host.pause(min(wait, _MAX_BACKOFF_S), self._clock.monotonic())

    def shutdown_sink(self, timeout_s: float) -> None:
        """Shut the sink, spending at most ``timeout_s`` seconds."""
        with internal_errors("sink shutdown"):
            self._sink.shutdown(max(0.0, timeout_s))

    # -- the spool ----------------------------------------------------------------------------
    def drain_once(self) -> bool:
        """Send one batch from the spool (claiming the next file when needed).

        Returns False when the spool holds nothing more for now (no file to claim, and
        none written since the look began).
        """
        spool = self._spool
        if spool is None:
            return False
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
                    return self._spool_saves != saves
                take = not (self._stopping or self.revoked)
                if take:
                    self._claim, self._claim_pos = claim, 0
            if not take:  # shutdown came meanwhile: put it back
                self._return_claim(claim, claim.events)
                return True
        batch = claim.events[self._claim_pos : self._claim_pos + MAX_BATCH]
        if not batch:
            with self._lock:
                if self._claim is claim:
                    self._claim = None
            claim.done()
            return True
        if not self.allowed():
            return True
        left = self._export(batch, live=False)
        finished = False
        with self._lock:
            if self._claim is not claim:  # shutdown took the claim back meanwhile
                return True
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
        if finished:
            claim.done()
        return True

    def spool(self, events: Sequence[Event], *, returned: Claim | None = None) -> None:
        """Write finished events to the spool; count and explain what it could not keep.

        ``returned``: the claim these events come from (handed back): they are not counted
        as newly spooled, and its file does not count against the spool's bound.
        """
        if not events or self._spool is None:
            return
        if not self.allowed():
            self.record_lost_event("consent_off", len(events))
            return
        what = "spooled" if returned else "undelivered"
        try:
            stored = self._spool.store(events, replacing=returned.path if returned else None)
        except OSError as exc:
            from codeweaver_telemetry._files import describe_os_error

            self.record_lost_event("spool_error", len(events))
            logger.warning(
                "codeweaver_telemetry: %d %s events were lost: they could not be written to "
                "the spool in %s (%s)",
                len(events),
                what,
                self._spool.directory,
                describe_os_error(exc),
            )
            return
        saved = stored.kept
        self._count_evicted(stored.refused + stored.evicted)
        gone = len(events) - saved - stored.refused
        if gone:  # the state directory was deleted (the user ran `delete`)
            self.record_lost_event("spool_error", gone)
            logger.info(
                "codeweaver_telemetry: %d %s events were dropped: the state directory is gone",
                gone,
                what,
            )
        if saved:
            with self._lock:
                if not returned:
                    self.spooled += saved
                self._spool_saves += 1
                self._on_spooled()

    def _count_evicted(self, evicted: int) -> None:
        """Count the events the spool's bound cost: one WARNING per episode (an episode
        ends with the first save that cost nothing)."""
        spool = self._spool
        if spool is None:
            return
        with self._lock:
            if evicted:
                self.lost["spool_full"] += evicted
            started = bool(evicted) and not self._spool_full
            self._spool_full = bool(evicted)
        if started:
            logger.warning(
                "codeweaver_telemetry: the spool in %s is full (%d bytes at most); its oldest "
                "events are dropped to keep the newest (stats() counts them as spool_full)",
                spool.directory,
                spool.max_bytes,
            )

    def _return_claim(self, claim: Claim, unsent: Sequence[Event]) -> None:
        """Hand a claimed spool file back with what was not sent (nothing once revoked)."""
        with internal_errors("spool"):
            try:
                self.spool(unsent, returned=claim)
            finally:
                claim.done()

    # -- exit ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Shutdown has begun: claim no more spool files."""
        with self._lock:
            self._stopping = True

    def take_undelivered(self) -> tuple[list[Event], int]:
        """At exit: hand back a claimed spool file, and return the finished events not
        delivered (kept for retry, or still in the sink's hands) and how many events in
        flight are neither (lost)."""
        with self._lock:
            # A batch still in the sink's hands (a hanging host) is spooled too; PostHog
            # drops an event it already has by its uuid, so a late delivery is harmless.
            # Keyed by uuid: one half of a split batch can be in both lists.
            finished = list({e.uuid: e for e in (*self._exporting, *self._retry)}.values())
            self._retry = []
            self.held = self._in_flight
            self._saved_at_exit = True  # a late answer for these must not spool them again
            lost = max(0, self._in_flight - len(self._exporting))
            claim, self._claim = self._claim, None
            unsent = claim.events[self._claim_pos :] if claim is not None else []
        if claim is not None:
            self._return_claim(claim, unsent)
        return finished, lost
