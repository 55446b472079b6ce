# SPDX-License-Identifier: MIT OR Apache-2.0
"""Feature flags: fetched in the background, cached, never slower than a budget, never raising.

Refresh policy: all flags for the install id are fetched with one request when each session
starts (or on the first lookup), then served from the cache. A lookup after
``refresh_s`` seconds triggers one background refetch while the cached values keep being
served; :meth:`FlagCache.refresh` refetches at once. Only the first lookup of an empty cache
waits, and for at most ``budget_s``; it returns the caller's default if the answer is not
there by then, and so do later lookups until it arrives.

A fetch that fails for a transient reason (:class:`FlagFetchError` with ``transient``: an
HTTP 5xx, 408 or 429, a connection error or a timeout; or a built-in ``ConnectionError`` or
``TimeoutError``) is tried again on the same background thread: every 50 ms, doubling, while
the retry can start within the first lookup's budget (a first lookup that comes while the
fetch waits to retry has it retry at once), then after 1, 2, 4, 8 and 16 s (about 30 s in
all), so the answer still arrives once the host recovers. A fetch that fails for good (any
other error, or the last retry) keeps the previous values (or none) and is tried again on
the next lookup after a back-off of ``refresh_s / 10`` (at least 5 s). No caller ever waits
for a retry beyond its budget. A fetch the source defers without a request
(:attr:`FlagFetchError.deferred`: the host asked for a pause, or does not answer event
deliveries) is not retried quickly: a waiting first lookup gets its default at once, and
the background retries wait at least as long as the host asked.

:class:`PostHogFlags` is the flag source for a PostHog host (remote ``/flags/`` or local
evaluation, through ``codeweaver_telemetry._posthog``, the one module that imports
``posthog``).

The flags a cache fetched are kept on disk for ``codeweaver-telemetry flags``:
:class:`FlagFile` writes ``<state_dir>/flags.json`` (mode 0600, atomically, never through
a symbolic link, never creating the state directory) on the flag thread, after each fetch
that brought values, and :func:`read_flag_file` reads it back. Its shape
(:class:`StoredFlags`, version 1)::

    {"version": 1, "install_id": "<uuid>", "fetched_at": "2025-01-02T03:04:05+00:00",
     "source": "remote" | "local", "flags": {"<key>": true | false | "<variant>"}}
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from codeweaver_telemetry._files import describe_os_error, read_regular, write_atomic
from codeweaver_telemetry._internal import internal_errors, logger
from codeweaver_telemetry._types import HostState

__all__ = [
    "FLAGS_FILE",
    "FlagCache",
    "FlagEvaluation",
    "FlagFetchError",
    "FlagFile",
    "FlagFileError",
    "FlagSourceClosed",
    "FlagValue",
    "PostHogFlags",
    "StoredFlags",
    "read_flag_file",
]

FlagValue = bool | str
"""A flag's value: its variant key for a multivariate flag, else True/False."""

FlagEvaluation = Literal["remote", "local"]
"""How flags were evaluated: by PostHog (``/flags/``), or locally from polled definitions."""

FLAGS_FILE = "flags.json"
"""The flags last fetched for this install, in the state directory (mode 0600)."""

_FLAGS_FILE_VERSION = 1
_MAX_FLAGS_FILE_BYTES = 1 << 20  # a real one is a few hundred bytes

#: The first quick retry waits this long; each next one twice as long as the last.
_QUICK_FIRST_DELAY_S = 0.05

#: Waits before the background retries, once the quick ones are over (about 30 s in all).
_BACKGROUND_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0)

#: A fetch thread with no fetch to do for this long ends (the next fetch starts another).
_IDLE_S = 60.0


class FlagFetchError(Exception):
    """A flag fetch failed; ``transient`` tells whether trying again soon may succeed.

    Raised by a flag source (such as ``PostHogFlags``) so that :class:`FlagCache` can
    retry without knowing the source's protocol: transient for an HTTP 5xx, 408 or 429, a
    connection error or a timeout; not transient for a refusal (400, 401, 403, ...) or a
    malformed answer. Its message holds no user data (a status code, an error type name).
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        retry_after: float | None = None,
        deferred: bool = False,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
        """Seconds the host asked for without requests (its ``Retry-After``), if it did."""
        self.deferred = deferred
        """No request was made (the host is paused or down): the cache does not retry
        quickly, and a first lookup gets its default at once."""


class FlagSourceClosed(FlagFetchError):
    """The flag source was shut down: the cache stops fetching, without a warning."""

    def __init__(self) -> None:
        super().__init__("the flag source is shut down", transient=False)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, FlagFetchError):
        return exc.transient
    return isinstance(exc, (ConnectionError, TimeoutError))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FlagFetchError):
        return str(exc)
    return type(exc).__name__


class FlagCache:
    """A cache of all flags for one distinct id, filled by ``fetch`` on a daemon thread.

    Args:
        fetch: returns ``{flag_key: value}``; may block (it runs on a background thread)
            and may raise (the failure is logged once and the cache keeps what it had); a
            :class:`FlagFetchError` with ``transient`` set is retried (see the module), and
            :class:`FlagSourceClosed` ends the fetch quietly.
        budget_s: the longest the first lookup waits.
        refresh_s: age after which a lookup triggers a background refetch.
        on_fetched: called with the values of every fetch that succeeded, on the fetch
            thread, after lookups can see them and before the fetch counts as done (a
            :class:`FlagFile` keeps them on disk); what it raises is logged once.
    """

    def __init__(
        self,
        fetch: Callable[[], dict[str, FlagValue]],
        *,
        budget_s: float,
        refresh_s: float,
        on_fetched: Callable[[dict[str, FlagValue]], object] | None = None,
    ) -> None:
        self._fetch = fetch
        self._on_fetched = on_fetched
        self._budget_s = budget_s
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._ready = threading.Event()
        self._values: dict[str, FlagValue] | None = None
        self._fetched_at = 0.0
        self._failed_at = 0.0
        self._fetching = False
        self._waited = False
        # Quick retries may start until then: the end of the first lookup's budget.
        self._quick_until = 0.0
        # refresh() was called after the running attempt began: fetch again after it.
        self._again = False
        # The first lookup started waiting: a retry sleeping in its back-off goes now.
        self._hurry = False
        # A fetch thread is alive (fetching, or idle and waiting for a fetch to do); its
        # generation changes in a forked child, where the parent's thread does not exist.
        self._serving = False
        self._generation = 0
        self._closed = False

    def start(self) -> None:
        """Start the fetch thread now, idle until a fetch is asked for; never blocks.

        A client calls this when it starts, so that its first lookup hands the fetch to a
        running thread instead of waiting for one to be created (on a busy machine that
        can take milliseconds). Nothing is fetched; the thread ends after a minute idle.
        """
        with internal_errors("feature flag thread"):
            with self._lock:
                if self._serving or self._closed:
                    return
                self._serving = True
                generation = self._generation
            self._spawn(generation)

    def close(self) -> None:
        """End the fetch thread once it is idle; fetch nothing more after the running one."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()

    def prefetch(self, *, force: bool = False) -> None:
        """Start a background fetch if none is running and the cache is empty or stale.

        ``force`` (a new session) fetches even a fresh cache; cached values keep being
        served until the new answer arrives.
        """
        self._prefetch(force=force)

    def _prefetch(self, *, force: bool) -> bool:
        """:meth:`prefetch`; True when it started a fetch."""
        now = time.monotonic()
        with self._lock:
            if self._fetching:
                if force:  # a new session: the running fetch asks again once it is done
                    self._again = True
                    self._wake.notify_all()
                return False
            fresh = (
                not force and self._values is not None and now - self._fetched_at < self._refresh_s
            )
            retry_wait = max(5.0, self._refresh_s / 10)
            if fresh or (self._failed_at and now - self._failed_at < retry_wait):
                return False
            self._claim_locked(now)
        return self._start()

    def refresh(self) -> None:
        """Refetch every flag now, in the background; never blocks, never raises.

        Freshness and the failed-fetch back-off are ignored. If a fetch is running, no
        second one starts: it is made to fetch again once its current request is done (or
        at once, if it is waiting to retry), so the values that arrive reflect the host's
        state after this call. Cached values keep being served meanwhile.
        """
        with internal_errors("refresh feature flags"):
            with self._lock:
                if self._fetching:
                    self._again = True
                    self._wake.notify_all()
                    return
                self._claim_locked(time.monotonic())
            self._start()

    def _after_fork(self) -> None:
        """Make the cache usable in a forked child: new lock, condition and event (the
        parent's may have been held at the fork), no fetch running (the parent's thread
        does not exist here); the cached values are kept."""
        was_ready = self._ready.is_set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._ready = threading.Event()
        if was_ready:
            self._ready.set()
        self._fetching = False
        self._again = False
        self._hurry = False
        self._serving = False
        self._generation += 1

    def _claim_locked(self, now: float) -> None:
        self._fetching = True
        self._again = False
        self._hurry = False
        self._quick_until = max(self._quick_until, now + self._budget_s)

    def _start(self) -> bool:
        """Have the claimed fetch run: on the fetch thread if one is alive, else on a new one."""
        with self._lock:
            if self._serving:
                self._wake.notify_all()  # an idle thread takes it; a busy one on its next turn
                return True
            self._serving = True
            generation = self._generation
        return self._spawn(generation)

    def _spawn(self, generation: int) -> bool:
        try:
            threading.Thread(
                target=self._serve,
                args=(generation,),
                name="codeweaver-telemetry-flags",
                daemon=True,
            ).start()
        except Exception as exc:  # no thread to be had (interpreter exiting, limits)
            with self._lock:
                claimed = self._fetching
                if self._generation == generation:
                    self._serving = False
                    self._fetching = False
                    if claimed:
                        self._failed_at = time.monotonic()
            if claimed:
                logger.warning(
                    "codeweaver_telemetry: feature flags could not be fetched (%s); "
                    "defaults are used",
                    type(exc).__name__,
                )
            return False
        return True

    def _serve(self, generation: int) -> None:
        """The fetch thread: run each fetch claimed, wait idle between them, end after
        :data:`_IDLE_S` idle, on :meth:`close`, or when a fork made it another's."""
        try:
            while True:
                with self._lock:
                    self._wake.wait_for(
                        lambda: self._fetching or self._closed or self._generation != generation,
                        _IDLE_S,
                    )
                    if self._generation != generation:
                        return  # reset for a forked child: the cache has a thread of its own
                    if not self._fetching:  # idle too long, or closed
                        self._serving = False
                        return
                self._run()
        except BaseException:
            with self._lock:
                if self._generation == generation:
                    self._serving = False
            raise

    def _run(self) -> None:
        with internal_errors("feature flag fetch"):
            try:
                self._fetch_until_done()
            except BaseException:
                with self._lock:  # never leave the cache believing a fetch is running
                    if self._fetching:
                        self._fetching = False
                        self._failed_at = time.monotonic()
                self._ready.set()
                raise

    def _fetch_until_done(self) -> None:
        """Fetch, retrying transient failures (see the module), until the values are in,
        the failure is final or the retries are used up; then clear ``_fetching``."""
        quick_delay = _QUICK_FIRST_DELAY_S
        background = 0
        while True:
            with self._lock:
                self._again = False  # this attempt starts after every refresh() so far
            try:
                values = dict(self._fetch())
            except Exception as exc:
                failure = exc
            else:
                with self._lock:
                    self._values = values
                    self._fetched_at = time.monotonic()
                    self._failed_at = 0.0
                    self._ready.set()
                self._keep(values)
                with self._lock:
                    if not self._again:
                        self._fetching = False
                        return
                continue  # refresh() was called while this request was out: ask again
            transient = _is_transient(failure)
            # Deferred: the source made no request (the host is paused or down). A quick
            # retry would find the same; a waiting first lookup gets its default now.
            deferred = isinstance(failure, FlagFetchError) and failure.deferred
            with self._lock:
                if self._again and not deferred:
                    continue  # refresh() was called meanwhile: ask again at once
                now = time.monotonic()
                delay: float | None = None  # None: no retry
                if transient and not deferred and now + quick_delay < self._quick_until:
                    delay = quick_delay
                    quick_delay *= 2
                elif transient and background < len(_BACKGROUND_DELAYS_S):
                    delay = _BACKGROUND_DELAYS_S[background]
                    background += 1
                    asked = failure.retry_after if isinstance(failure, FlagFetchError) else None
                    if asked is not None:
                        delay = max(delay, asked)
                if deferred:
                    self._ready.set()
                if delay is None:  # failed for good: keep what we had, back off
                    self._fetching = False
                    self._failed_at = now
                    self._ready.set()
                    if isinstance(failure, FlagSourceClosed):
                        return
                    break
            logger.debug(
                "codeweaver_telemetry: feature flags could not be fetched (%s); "
                "trying again in %.2f s",
                _describe(failure),
                delay,
            )
            with self._lock:
                if deferred:  # only time (or a refresh) can change the answer
                    self._wake.wait_for(lambda: self._again or self._closed, delay)
                    self._hurry = False
                else:
                    self._wake.wait_for(lambda: self._again or self._hurry, delay)
                if self._hurry:  # the first lookup is waiting: quick retries again
                    self._hurry = False
                    quick_delay = _QUICK_FIRST_DELAY_S
        logger.warning(
            "codeweaver_telemetry: feature flags could not be fetched (%s); defaults are used",
            _describe(failure),
        )

    def _keep(self, values: dict[str, FlagValue]) -> None:
        """Hand fetched values to ``on_fetched`` (on the fetch thread; never raises)."""
        if self._on_fetched is None:
            return
        with internal_errors("feature flag file"):
            self._on_fetched(dict(values))

    def all(self) -> dict[str, FlagValue]:
        """Every flag, waiting at most the budget on the very first lookup."""
        started = self._prefetch(force=False)
        with self._lock:
            values = self._values
            should_wait = values is None and not self._waited
            self._waited = True
            if should_wait and self._fetching and not started:
                # The fetch started earlier may be waiting to retry: retry now, and keep
                # retrying quickly while this lookup waits.
                self._quick_until = max(self._quick_until, time.monotonic() + self._budget_s)
                self._hurry = True
                self._wake.notify_all()
        if should_wait:
            self._ready.wait(self._budget_s)
            with self._lock:
                values = self._values
        return dict(values) if values else {}

    def get(self, key: str) -> FlagValue | None:
        """One flag's value, or None when it is unknown (not fetched yet, or not defined)."""
        return self.all().get(key)


class PostHogFlags:
    """Fetch every flag for one distinct id from PostHog, remotely or by local evaluation.

    A failed remote fetch raises :class:`FlagFetchError`, transient for HTTP 5xx, 408 and
    429, connection errors and timeouts (the flag cache retries those), not for other
    statuses or a malformed answer. posthog's own retries are off (``max_retries=0``): the
    cache does the retrying.

    Args:
        api_key: the project API key.
        host: the PostHog host.
        distinct_id: the install id.
        timeout_s: per-request timeout.
        personal_api_key: a feature-flags secret key; enables local evaluation.
        host_state: the host's state, shared with event delivery: while the host asked for a
            pause (``Retry-After``, from either side) or does not answer event deliveries,
            no remote fetch is made (a transient :class:`FlagFetchError`, so the cache
            keeps serving what it has and tries again later); a ``Retry-After`` on
            ``/flags/`` pauses event delivery too.
    """

    def __init__(
        self,
        *,
        api_key: str,
        host: str,
        distinct_id: str,
        timeout_s: float,
        personal_api_key: str | None = None,
        host_state: HostState | None = None,
    ) -> None:
        self._host_state = host_state
        self._api_key = api_key
        self._host = host
        self._distinct_id = distinct_id
        self._timeout_s = timeout_s
        self._personal_api_key = personal_api_key
        self._client: Any = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def evaluation(self) -> FlagEvaluation:
        """``"local"`` with a feature-flags secret key (local evaluation), else ``"remote"``."""
        return "local" if self._personal_api_key else "remote"

    @classmethod
    def from_settings(
        cls, settings: Any, distinct_id: str, *, host_state: HostState | None = None
    ) -> PostHogFlags:
        """The source for the PostHog project of ``settings`` (which must have an API key):
        its host, key, request timeout and feature-flags secret key."""
        personal = settings.posthog_personal_api_key
        return cls(
            api_key=settings.posthog_api_key.get_secret_value(),
            host=settings.posthog_host,
            distinct_id=distinct_id,
            timeout_s=settings.request_timeout_seconds,
            personal_api_key=personal.get_secret_value() if personal else None,
            host_state=host_state,
        )

    def __call__(self) -> dict[str, FlagValue]:
        """One fetch of all flags (blocking; runs on the flag cache's thread).

        After :meth:`shutdown` it raises :class:`FlagSourceClosed` and sends nothing.
        """
        from codeweaver_telemetry import _posthog  # it imports this module

        if self._closed:
            raise FlagSourceClosed
        client = None
        if self._personal_api_key:
            with self._lock:
                if self._closed:
                    raise FlagSourceClosed
                if self._client is None:
                    self._client = _posthog.local_flags_client(
                        api_key=self._api_key,
                        host=self._host,
                        personal_api_key=self._personal_api_key,
                        timeout_s=self._timeout_s,
                    )
                client = self._client
        state = self._host_state
        if state is not None and client is None:  # a remote fetch is a request to the host
            now = time.monotonic()
            reason = state.blocked(now)
            if reason is not None:
                wait = state.paused_until - now
                raise FlagFetchError(
                    reason, transient=True, retry_after=wait if wait > 0 else None, deferred=True
                )
        try:
            return _posthog.fetch_flags(
                api_key=self._api_key,
                host=self._host,
                distinct_id=self._distinct_id,
                timeout_s=self._timeout_s,
                local_client=client,
            )
        except FlagFetchError as exc:
            if state is not None and exc.retry_after is not None:
                state.pause(exc.retry_after, time.monotonic())
            raise

    def _after_fork(self) -> None:
        """In a forked child: a new lock (the parent's may have been held at the fork).

        The local-evaluation client, if any, is kept: posthog re-creates its own threads
        and connection pools in the child.
        """
        self._lock = threading.Lock()

    def shutdown(self) -> None:
        """Stop the local-evaluation poller, if one was started (without waiting on it);
        fetch nothing more (a retry the flag cache has scheduled ends quietly)."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            from codeweaver_telemetry import _posthog

            _posthog.stop_local_client(client)


# -- the flag file ---------------------------------------------------------------------------


class FlagFileError(ValueError):
    """``flags.json`` exists but cannot be read or understood."""


@dataclasses.dataclass(frozen=True)
class StoredFlags:
    """What ``flags.json`` holds: the values of one fetch, for one install id.

    Attributes:
        install_id: the distinct id the flags were evaluated for.
        fetched_at: when they were fetched, ISO 8601 in UTC (``2025-01-02T03:04:05+00:00``).
        source: ``"remote"`` (PostHog evaluated them) or ``"local"`` (local evaluation).
        values: ``{flag_key: value}``.
    """

    install_id: str
    fetched_at: str
    source: FlagEvaluation
    values: dict[str, FlagValue]

    def to_json(self) -> dict[str, Any]:
        """The file's JSON document."""
        return {
            "version": _FLAGS_FILE_VERSION,
            "install_id": self.install_id,
            "fetched_at": self.fetched_at,
            "source": self.source,
            "flags": dict(self.values),
        }

    @classmethod
    def from_json(cls, data: object) -> StoredFlags:
        """Parse the file's JSON document.

        Raises:
            FlagFileError: it is not a version 1 flag file.
        """
        if not isinstance(data, dict) or data.get("version") != _FLAGS_FILE_VERSION:
            raise FlagFileError("not a version 1 flag file")
        install_id = data.get("install_id")
        fetched_at = data.get("fetched_at")
        source = data.get("source")
        values = data.get("flags")
        if not isinstance(install_id, str) or not isinstance(fetched_at, str):
            raise FlagFileError("the flag file has a bad install id or date")
        if source not in ("remote", "local"):
            raise FlagFileError("the flag file has a bad source")
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, (bool, str)) for k, v in values.items()
        ):
            raise FlagFileError("the flag file has bad flag values")
        return cls(install_id=install_id, fetched_at=fetched_at, source=source, values=values)


def read_flag_file(directory: str | os.PathLike[str]) -> StoredFlags | None:
    """The flags stored in ``directory/flags.json``; None when there is no such file.

    Never blocks (a FIFO there is refused) and reads at most 1 MiB.

    Raises:
        FlagFileError: the file exists but is unreadable or malformed.
    """
    import json

    try:
        raw = read_regular(Path(directory) / FLAGS_FILE, _MAX_FLAGS_FILE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FlagFileError(f"the flag file could not be read ({describe_os_error(exc)})") from None
    try:
        return StoredFlags.from_json(json.loads(raw.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, FlagFileError):
            raise
        raise FlagFileError("the flag file is not valid JSON") from None


class FlagFile:
    """Keep the flags a cache fetched in ``<directory>/flags.json``: a ``FlagCache``'s
    ``on_fetched``.

    Each call writes the values with the time and how they were evaluated, atomically
    (:func:`~codeweaver_telemetry._files.write_atomic`: mode 0600, a symbolic link at the
    name is replaced, never written through). A missing directory is never created (the
    user may have deleted it). While ``gate`` says no (consent withdrawn, or the install id
    replaced, since this client started) nothing is written. A failed write is logged once
    and nothing else happens.

    Args:
        directory: the state directory.
        install_id: the distinct id the flags are evaluated for.
        source: how they are evaluated (``PostHogFlags.evaluation``).
        gate: asked before each write; None writes always.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        install_id: str,
        source: FlagEvaluation,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        self._directory = Path(directory)
        self._install_id = install_id
        self._source: FlagEvaluation = source
        self._gate = gate
        self._warned = False

    def __call__(self, values: Mapping[str, FlagValue]) -> StoredFlags | None:
        """Write ``values`` now, if the gate allows; returns what was written, or None (the
        gate said no, or the write failed: logged once)."""
        if self._gate is not None and not self._gate():
            return None
        try:
            return self.write(values)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "codeweaver_telemetry: the feature flag cache %s could not be written "
                    "(%s); flags work as before",
                    self._directory / FLAGS_FILE,
                    describe_os_error(exc),
                )
            return None

    def write(self, values: Mapping[str, FlagValue]) -> StoredFlags:
        """Write ``values`` now, whatever the gate says; returns what was written.

        Raises:
            OSError: the file could not be written (the directory is gone, the disk is
                full...).
        """
        import datetime as dt
        import json

        stored = StoredFlags(
            install_id=self._install_id,
            fetched_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            source=self._source,
            values=dict(values),
        )
        data = json.dumps(stored.to_json(), indent=2, ensure_ascii=False).encode("utf-8")
        write_atomic(self._directory, FLAGS_FILE, data + b"\n")
        return stored
