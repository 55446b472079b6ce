# SPDX-License-Identifier: MIT OR Apache-2.0
"""The ``/batch/`` request: one encoder pass per batch, gzip, one keep-alive session.

PostHog's capture contract (``POST <host>/batch/`` with ``{"batch", "sent_at",
"api_key"}``, gzip allowed) is small and stable; the official client's own request
function walks every value of every event in Python before encoding (to replace
non-finite floats) and compresses at level 9, which costs more than our whole privacy
pipeline. Here the batch is encoded by the C JSON encoder in one pass with NaN refused
(the pipeline never makes one; a batch that still holds one is cleaned, then encoded),
compressed at level 1 (fast, and what is sent is small JSON that compresses well anyway),
and posted over one ``requests`` session (``requests`` is the HTTP library the posthog
package itself depends on; it honours the usual proxy variables and certificate
settings) that is renewed in a forked child.

Called only from the worker thread; never raises for delivery problems.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zlib
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any

from codeweaver_telemetry._codec import message_json
from codeweaver_telemetry._internal import fork_safe_imports, in_forked_child, logger
from codeweaver_telemetry._types import Event, ExportResult

__all__ = ["post_batch", "prepare"]

_DROP_STATUSES = frozenset({400, 401, 403, 404, 422})
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_USER_AGENT = "codeweaver-telemetry (posthog /batch/ contract)"

_SESSION: Any = None


def prepare() -> None:
    """Import ``requests`` and open the session (on the worker thread, under the lock
    ``os.fork()`` waits for)."""
    _session()


def _session() -> Any:
    global _SESSION
    session = _SESSION
    if session is None:
        with fork_safe_imports():
            import requests

            if _SESSION is None:
                _SESSION = requests.Session()
                in_forked_child(_forget_session)
            session = _SESSION
    return session


def _forget_session() -> None:
    # A child must not share the parent's keep-alive sockets; it opens its own.
    global _SESSION
    _SESSION = None


def encode_batch(batch: Sequence[Event], api_key: str) -> bytes:
    """The request body: ``{"batch", "sent_at", "api_key"}`` as compact UTF-8 JSON, non-ASCII
    kept; each event's properties are encoded once (``_codec.message_json``)."""
    sent_at = dt.datetime.now(dt.timezone.utc).isoformat()
    items = ",".join([message_json(e) for e in batch])
    text = f'{{"batch":[{items}],"sent_at":"{sent_at}","api_key":{_ENCODER.encode(api_key)}}}'
    return text.encode("utf-8")


def post_batch(
    batch: Sequence[Event], *, api_key: str, host: str, timeout_s: float
) -> ExportResult:
    """POST the batch (gzip) to ``<host>/batch/``; never raises for delivery problems.

    Returns SUCCESS; SPLIT for HTTP 413 (too large as a whole); DROP for 400, 401, 403, 404
    and 422 (it would fail again); RETRY for anything else (5xx, 408, 429, network), as
    ``ExportResult.retry(after)`` when the host sent a ``Retry-After``.
    """
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    data = packer.compress(encode_batch(batch, api_key)) + packer.flush()
    try:
        try:
            status, retry_after = _post(host, data, timeout_s)
        except Exception as exc:
            if not _stale_connection(exc):
                raise
            # A kept-alive connection the host had closed (its idle timeout, a restart):
            # the request never reached it. Once more, on a new connection.
            status, retry_after = _post(host, data, timeout_s)
    except Exception as exc:  # network errors, timeouts, malformed answers
        logger.info(
            "codeweaver_telemetry: PostHog unreachable (%s); will retry", type(exc).__name__
        )
        return ExportResult.RETRY
    if status == 200:
        return ExportResult.SUCCESS
    if status == 413:
        return ExportResult.SPLIT
    if status in _DROP_STATUSES:
        logger.warning("codeweaver_telemetry: PostHog rejected a batch (HTTP %s); dropped", status)
        return ExportResult.DROP
    logger.info("codeweaver_telemetry: PostHog answered HTTP %s; will retry", status)
    if retry_after is not None:
        return ExportResult.retry(retry_after)
    return ExportResult.RETRY


def _post(host: str, data: bytes, timeout_s: float) -> tuple[int, float | None]:
    """POST ``data`` to ``<host>/batch/``: (status, Retry-After seconds or None)."""
    answer = _session().post(
        host.rstrip("/") + "/batch/",
        data=data,
        headers={
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": _USER_AGENT,
        },
        timeout=timeout_s,
    )
    status: int = answer.status_code
    retry_after = _retry_after(answer.headers.get("Retry-After"))
    answer.content  # noqa: B018  (read whole: the connection goes back to the pool)
    return status, retry_after


def _stale_connection(exc: Exception) -> bool:
    """Whether ``exc`` is a reused connection found closed when the request was written
    (``requests``' ConnectionError over urllib3's ProtocolError), not a host that refuses,
    times out or answers badly."""
    import requests
    from urllib3.exceptions import ProtocolError

    return isinstance(exc, requests.exceptions.ConnectionError) and any(
        isinstance(arg, ProtocolError) for arg in exc.args
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds, or an HTTP date); None without one."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        seconds = (moment - dt.datetime.now(dt.timezone.utc)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None
