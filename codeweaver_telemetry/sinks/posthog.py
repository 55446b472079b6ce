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

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from typing import Any

from codeweaver_telemetry._internal import logger
from codeweaver_telemetry._types import Event, ExportResult
from codeweaver_telemetry.flags import FlagValue

__all__ = ["PostHogFlags", "PostHogSink"]

_DROP_STATUSES = {400, 401, 403, 404, 422}


def _quiet_posthog_logger() -> None:
    # posthog logs to the "posthog" logger, which has no handler of its own, so Python's
    # last-resort handler would print its warnings on the host's stderr. A NullHandler
    # keeps them out of the host's output; a host that configures logging still sees them.
    log = logging.getLogger("posthog")
    if not log.handlers:
        log.addHandler(logging.NullHandler())


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

    def export(self, batch: Sequence[Event]) -> ExportResult:
        """POST the batch (gzip) to ``/batch/``.

        Returns SUCCESS; SPLIT for HTTP 413 (too large as a whole); DROP for 400, 401, 403,
        404 and 422 (it would fail again); RETRY for anything else (5xx, 408, 429, network).
        """
        if self._request is None:
            # The ~200 ms import happens on the worker thread, on the first export.
            from posthog import request

            _quiet_posthog_logger()
            self._request = request
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

    def __call__(self) -> dict[str, FlagValue]:
        """One fetch of all flags (blocking; runs on the flag cache's thread)."""
        if self._personal_api_key:
            return self._local()
        return self._remote()

    def _remote(self) -> dict[str, FlagValue]:
        from posthog import request

        _quiet_posthog_logger()
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
        if not isinstance(response, dict):
            raise ValueError("unexpected /flags/ answer")
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
            if self._client is None:
                from posthog import Posthog

                _quiet_posthog_logger()
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
            raise ValueError("no flag definitions loaded")
        return {k: v for k, v in values.items() if isinstance(v, (bool, str))}

    def shutdown(self) -> None:
        """Stop the local-evaluation poller, if one was started (without waiting on it)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            poller = getattr(client, "poller", None)
            if poller is not None:
                poller.stop()
