# SPDX-License-Identifier: MIT OR Apache-2.0
"""PostHogSink and PostHog flag fetching: the only module that imports ``posthog``, lazily.

Events go out through the official package's ``/batch/`` request function, called from our
own worker thread with a short timeout, so neither the caller nor process exit ever waits on
PostHog's own queue or its unbounded ``shutdown()``. Retries and back-off are the worker's.
Only what the privacy pipeline produced is sent; GeoIP is disabled on every event and no
``$ip`` is set.

Flags are evaluated for the install id: remotely with one ``/flags/`` request for all flags,
or, with a feature-flags secret key, locally by the official client from the definitions it
polls (``only_evaluate_locally``), which makes no request per lookup.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any

from codeweaver_telemetry._internal import fork_safe_imports, in_forked_child, logger
from codeweaver_telemetry._types import Event, ExportResult
from codeweaver_telemetry.flags import FlagFetchError, FlagSourceClosed, FlagValue

__all__ = ["PostHogFlags", "PostHogSink"]

_DROP_STATUSES = {400, 401, 403, 404, 422}


def _quiet_posthog_logger() -> None:
    # posthog logs to the "posthog" logger, which has no handler of its own, so Python's
    # last-resort handler would print its warnings on the host's stderr. A NullHandler
    # keeps them out of the host's output; a host that configures logging still sees them.
    log = logging.getLogger("posthog")
    if not log.handlers:
        log.addHandler(logging.NullHandler())


_FORK_HOOK = False


def _posthog_request() -> Any:
    """``posthog.request``, imported once, with its connections renewed in a forked child."""
    global _FORK_HOOK
    from posthog import request

    _quiet_posthog_logger()
    if not _FORK_HOOK:
        _FORK_HOOK = True
        in_forked_child(_renew_connections)
    return request


def _renew_connections() -> None:
    # A child must not talk over the parent's keep-alive sockets (both would read and
    # write the same connection); posthog renews its sessions only when a Posthog client
    # exists, which the sink never builds.
    request = sys.modules.get("posthog.request")
    reset = getattr(request, "reset_sessions", None)
    if callable(reset):
        with contextlib.suppress(Exception):
            reset()


def _message(event: Event) -> dict[str, Any]:
    return {
        "type": "capture",
        "event": event.name,
        "distinct_id": event.distinct_id,
        "properties": event.properties,
        "timestamp": dt.datetime.fromtimestamp(event.timestamp, dt.timezone.utc).isoformat(),
        "uuid": event.uuid,
    }


class PostHogSink:
    """Send finished batches to a PostHog host.

    Args:
        api_key: the project API key.
        host: the PostHog host URL (validated by the settings).
        timeout_s: connect and read timeout for each request.
    """

    def __init__(self, *, api_key: str, host: str, timeout_s: float) -> None:
        self.retry_after_s = 0.0
        """The host's ``Retry-After`` from the last answer (0 when it gave none)."""
        self._request: Any = None
        self._api_key = api_key
        self._host = host
        self._timeout_s = timeout_s

    def prepare(self) -> None:
        """Import the posthog transport (~200 ms); the worker calls this when its thread
        starts, under the lock ``os.fork()`` waits for."""
        if self._request is None:
            with fork_safe_imports():
                self._request = _posthog_request()

    def export(self, batch: Sequence[Event]) -> ExportResult:
        """POST the batch (gzip) to ``/batch/``.

        Returns SUCCESS; SPLIT for HTTP 413 (too large as a whole); DROP for 400, 401, 403,
        404 and 422 (it would fail again); RETRY for anything else (5xx, 408, 429, network).
        """
        if self._request is None:
            self.prepare()
        self.retry_after_s = 0.0
        try:
            self._request.batch_post(
                self._api_key,
                host=self._host,
                gzip=True,
                timeout=self._timeout_s,
                batch=[_message(e) for e in batch],
            )
        except self._request.APIError as exc:
            status = exc.status if isinstance(exc.status, int) else 0
            retry_after = getattr(exc, "retry_after", None)
            if isinstance(retry_after, (int, float)) and retry_after > 0:
                self.retry_after_s = float(retry_after)
            if status == 413:
                return ExportResult.SPLIT
            if status in _DROP_STATUSES:
                logger.warning(
                    "codeweaver_telemetry: PostHog rejected a batch (HTTP %s); dropped", status
                )
                return ExportResult.DROP
            logger.info("codeweaver_telemetry: PostHog answered HTTP %s; will retry", status)
            return ExportResult.RETRY
        except Exception as exc:  # network errors, timeouts, malformed answers
            logger.info(
                "codeweaver_telemetry: PostHog unreachable (%s); will retry", type(exc).__name__
            )
            return ExportResult.RETRY
        return ExportResult.SUCCESS

    def shutdown(self, timeout_s: float) -> None:
        """Nothing is queued inside this sink; the worker owns every pending event."""


def _transient_status(status: int) -> bool:
    """Whether an HTTP status from ``/flags/`` may clear up soon: 5xx, 408 and 429."""
    return status >= 500 or status in (408, 429)


def _fetch_error(exc: Exception, request: Any) -> FlagFetchError | None:
    """Classify what ``request.flags`` raised; None when it is not a request failure.

    HTTP errors (``APIError``, with ``QuotaLimitError`` among them as a 200) are transient
    for 5xx, 408 and 429; connection errors, timeouts and answers cut short are transient,
    except TLS failures (a certificate does not fix itself in seconds). The message holds
    only a status code or a type name.
    """
    import requests

    if isinstance(exc, request.APIError):
        status = exc.status if isinstance(exc.status, int) else 0
        return FlagFetchError(f"HTTP {status}", transient=_transient_status(status))
    if isinstance(exc, requests.exceptions.SSLError):
        return FlagFetchError(type(exc).__name__, transient=False)
    if isinstance(
        exc,
        (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ),
    ):
        return FlagFetchError(type(exc).__name__, transient=True)
    return None


def _flag_value(entry: Any) -> FlagValue | None:
    if not isinstance(entry, dict):
        return None
    variant = entry.get("variant")
    if isinstance(variant, str) and variant:
        return variant
    enabled = entry.get("enabled")
    return bool(enabled) if isinstance(enabled, bool) else None


class PostHogFlags:
    """Fetch every flag for one distinct id, remotely or by local evaluation.

    A failed remote fetch raises :class:`~codeweaver_telemetry.flags.FlagFetchError`,
    transient for HTTP 5xx, 408 and 429, connection errors and timeouts (the flag cache
    retries those), not for other statuses or a malformed answer. posthog's own retries
    are off (``max_retries=0``): the cache does the retrying.

    Args:
        api_key: the project API key.
        host: the PostHog host.
        distinct_id: the install id.
        timeout_s: per-request timeout.
        personal_api_key: a feature-flags secret key; enables local evaluation.
    """

    def __init__(
        self,
        *,
        api_key: str,
        host: str,
        distinct_id: str,
        timeout_s: float,
        personal_api_key: str | None = None,
    ) -> None:
        self._api_key = api_key
        self._host = host
        self._distinct_id = distinct_id
        self._timeout_s = timeout_s
        self._personal_api_key = personal_api_key
        self._client: Any = None
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self) -> dict[str, FlagValue]:
        """One fetch of all flags (blocking; runs on the flag cache's thread).

        After :meth:`shutdown` it raises :class:`FlagSourceClosed` and sends nothing.
        """
        if self._closed:
            raise FlagSourceClosed
        if self._personal_api_key:
            return self._local()
        return self._remote()

    def _remote(self) -> dict[str, FlagValue]:
        with fork_safe_imports():
            request = _posthog_request()
        try:
            response = request.flags(
                self._api_key,
                self._host,
                gzip=False,
                timeout=self._timeout_s,
                max_retries=0,
                distinct_id=self._distinct_id,
                groups={},
                person_properties={},
                group_properties={},
                geoip_disable=True,
            )
        except Exception as exc:
            error = _fetch_error(exc, request)
            if error is None:  # a malformed answer (JSON errors are ValueErrors) or a bug
                raise FlagFetchError(type(exc).__name__, transient=False) from exc
            raise error from exc
        if not isinstance(response, dict):
            raise FlagFetchError("unexpected /flags/ answer", transient=False)
        flags = response.get("flags")
        values: dict[str, FlagValue] = {}
        if isinstance(flags, dict):
            for key, entry in flags.items():
                value = _flag_value(entry)
                if isinstance(key, str) and value is not None:
                    values[key] = value
        else:
            legacy = response.get("featureFlags")
            if isinstance(legacy, dict):
                for key, value in legacy.items():
                    if isinstance(key, str) and isinstance(value, (bool, str)):
                        values[key] = value
        return values

    def _local(self) -> dict[str, FlagValue]:
        with self._lock:
            if self._closed:
                raise FlagSourceClosed
            if self._client is None:
                with fork_safe_imports():
                    from posthog import Posthog

                    _posthog_request()
                self._client = Posthog(
                    self._api_key,
                    host=self._host,
                    secret_key=self._personal_api_key,
                    feature_flags_request_timeout_seconds=self._timeout_s,
                    disable_geoip=True,
                    enable_exception_autocapture=False,
                    send=False,
                    max_retries=0,
                    timeout=int(max(1, self._timeout_s)),
                    capture_mode="v0",
                )
            client = self._client
        values = client.get_all_flags(
            self._distinct_id,
            only_evaluate_locally=True,
            disable_geoip=True,
        )
        if values is None:
            raise FlagFetchError("no flag definitions loaded", transient=False)
        return {k: v for k, v in values.items() if isinstance(v, (bool, str))}

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
            poller = getattr(client, "poller", None)
            if poller is not None:
                poller.stop()
