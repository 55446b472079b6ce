# SPDX-License-Identifier: MIT OR Apache-2.0
"""The only module that imports ``posthog`` (lazily): feature flags.

Events do not go through the posthog package: :mod:`codeweaver_telemetry._transport`
posts them to PostHog's ``/batch/`` from our own worker thread with a short timeout (so
neither the caller nor process exit ever waits on PostHog's own queue or its unbounded
``shutdown()``), encoded in one C pass. GeoIP is disabled on every event and no ``$ip`` is
set.

Flags are evaluated for the install id (:func:`fetch_flags`): remotely with one
``/flags/`` request for all flags, or, with a feature-flags secret key, locally by the
official client (:func:`local_flags_client`) from the definitions it polls
(``only_evaluate_locally``), which makes no request per lookup.

posthog logs to a logger that gets a NullHandler here, and its HTTP sessions are renewed
in a forked child.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

from codeweaver_telemetry._internal import fork_safe_imports, in_forked_child
from codeweaver_telemetry.flags import FlagFetchError, FlagValue

__all__ = [
    "fetch_flags",
    "local_flags_client",
    "prepare",
    "stop_local_client",
]


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


_REQUEST: Any = None


def prepare() -> Any:
    """Import the posthog transport (~200 ms) once, under the lock ``os.fork()`` waits
    for; returns ``posthog.request``. The worker calls this when its thread starts."""
    global _REQUEST
    request = _REQUEST
    if request is None:
        with fork_safe_imports():
            request = _REQUEST = _posthog_request()
    return request


# -- sending ------------------------------------------------------------------------------------


# -- flags ------------------------------------------------------------------------------------


def fetch_flags(
    *,
    api_key: str,
    host: str,
    distinct_id: str,
    timeout_s: float,
    local_client: Any = None,
) -> dict[str, FlagValue]:
    """Every flag for ``distinct_id``: with ``local_client`` (from
    :func:`local_flags_client`) by local evaluation, else with one ``/flags/`` request.

    Blocking. posthog's own retries are off (``max_retries=0``): the caller retries.

    Raises:
        FlagFetchError: the fetch failed; transient for HTTP 5xx, 408 and 429, connection
            errors and timeouts, not for other statuses, a malformed answer or (locally)
            flag definitions not loaded.
    """
    if local_client is not None:
        return _local(local_client, distinct_id)
    return _remote(api_key=api_key, host=host, distinct_id=distinct_id, timeout_s=timeout_s)


def _remote(*, api_key: str, host: str, distinct_id: str, timeout_s: float) -> dict[str, FlagValue]:
    request = prepare()
    try:
        response = request.flags(
            api_key,
            host,
            gzip=False,
            timeout=timeout_s,
            max_retries=0,
            distinct_id=distinct_id,
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


def _local(client: Any, distinct_id: str) -> dict[str, FlagValue]:
    values = client.get_all_flags(
        distinct_id,
        only_evaluate_locally=True,
        disable_geoip=True,
    )
    if values is None:
        raise FlagFetchError("no flag definitions loaded", transient=False)
    return {k: v for k, v in values.items() if isinstance(v, (bool, str))}


def local_flags_client(*, api_key: str, host: str, personal_api_key: str, timeout_s: float) -> Any:
    """A ``posthog.Posthog`` client that evaluates flags locally from the definitions it
    polls with ``personal_api_key``, and sends nothing (``send=False``). Stop its poller
    with :func:`stop_local_client`."""
    with fork_safe_imports():
        from posthog import Posthog

        _posthog_request()
    return Posthog(
        api_key,
        host=host,
        secret_key=personal_api_key,
        feature_flags_request_timeout_seconds=timeout_s,
        disable_geoip=True,
        enable_exception_autocapture=False,
        send=False,
        max_retries=0,
        timeout=int(max(1, timeout_s)),
        capture_mode="v0",
    )


def stop_local_client(client: Any) -> None:
    """Stop a local-evaluation client's definitions poller, if it started one (without
    waiting on it)."""
    poller = getattr(client, "poller", None)
    if poller is not None:
        poller.stop()


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
        retry_after = getattr(exc, "retry_after", None)
        return FlagFetchError(
            f"HTTP {status}",
            transient=_transient_status(status),
            retry_after=(
                float(retry_after)
                if isinstance(retry_after, (int, float)) and not isinstance(retry_after, bool)
                else None
            ),
        )
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
