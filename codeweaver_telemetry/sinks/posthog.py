# SPDX-License-Identifier: MIT OR Apache-2.0
"""PostHogSink: finished batches to a PostHog host's ``/batch/``, through
``codeweaver_telemetry._transport``.

The posthog package itself is imported only by ``codeweaver_telemetry._posthog``, lazily,
for flags; sending needs only the transport (``requests``, loaded on the worker thread).
Retries and back-off are the worker's: the sink answers each batch with an
:class:`~codeweaver_telemetry._types.ExportResult` (a RETRY carries the host's
``Retry-After``). ``PostHogFlags`` now lives in :mod:`codeweaver_telemetry.flags`; it is
re-exported here for older imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from codeweaver_telemetry.flags import PostHogFlags  # moved to flags; re-exported

if TYPE_CHECKING:
    from codeweaver_telemetry._types import Event, ExportResult

__all__ = ["PostHogFlags", "PostHogSink"]


class PostHogSink:
    """Send finished batches to a PostHog host.

    Args:
        api_key: the project API key.
        host: the PostHog host URL (validated by the settings).
        timeout_s: connect and read timeout for each request.
    """

    def __init__(self, *, api_key: str, host: str, timeout_s: float) -> None:
        self.retry_after_s = 0.0
        """The host's ``Retry-After`` from the last answer (0 when it gave none); the same
        as the last result's ``retry_after``, kept for readers of the attribute."""
        self._api_key = api_key
        self._host = host
        self._timeout_s = timeout_s

    def prepare(self) -> None:
        """Load the transport (``requests``, ~50 ms); the worker calls this before its first
        send, under the lock ``os.fork()`` waits for."""
        from codeweaver_telemetry import _transport  # on the worker thread, never at start-up

        _transport.prepare()

    def export(self, batch: Sequence[Event]) -> ExportResult:
        """POST the batch (gzip) to ``/batch/``.

        Returns SUCCESS; SPLIT for HTTP 413 (too large as a whole); DROP for 400, 401, 403,
        404 and 422 (it would fail again); RETRY for anything else (5xx, 408, 429, network),
        as ``ExportResult.retry(after)`` when the host sent a ``Retry-After``.
        """
        from codeweaver_telemetry import _transport

        self.retry_after_s = 0.0
        result = _transport.post_batch(
            batch, api_key=self._api_key, host=self._host, timeout_s=self._timeout_s
        )
        self.retry_after_s = result.retry_after or 0.0
        return result

    def shutdown(self, timeout_s: float) -> None:
        """Nothing is queued inside this sink; the worker owns every pending event."""
