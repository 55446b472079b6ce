# SPDX-License-Identifier: MIT OR Apache-2.0
"""Test helpers: see exactly what would leave the machine, without sending anything."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from codeweaver_telemetry._process import PROCESS
from codeweaver_telemetry.client import TelemetryClient
from codeweaver_telemetry.consent import ConsentDecision
from codeweaver_telemetry.settings import TelemetrySettings
from codeweaver_telemetry.sinks.memory import FunctionSink, InMemorySink

__all__ = ["FunctionSink", "InMemorySink", "capture_events", "reset_telemetry_client"]


@contextlib.contextmanager
def capture_events(**settings: object) -> Iterator[InMemorySink]:
    """Install a process-wide client that records finished events in memory.

    Inside the block, :func:`~codeweaver_telemetry.get_telemetry_client` returns a client
    whose events pass the full privacy pipeline and land in the yielded sink
    (``sink.events()``), whatever the environment says about consent: nothing is sent
    anywhere. Events reach the sink asynchronously: call ``flush()`` on the client, or read
    the sink after the block (leaving it shuts the client down, which flushes). State lives
    in a temporary directory. The previous client is restored afterwards.
    """
    values = {"batch_interval_seconds": 0.05, **settings}
    built = TelemetrySettings(**values)  # type: ignore[arg-type]  # bad values raise here
    state_dir = tempfile.mkdtemp(prefix="codeweaver-telemetry-test-")
    sink = InMemorySink()
    client = TelemetryClient._decided(
        ConsentDecision(True, "testing", "codeweaver_telemetry.testing"),
        built.model_copy(update={"state_dir": Path(state_dir)}),
        sink=sink,
    )
    previous = PROCESS.install(client)
    try:
        yield sink
    finally:
        client.shutdown(timeout=5)
        PROCESS.install(previous)
        shutil.rmtree(state_dir, ignore_errors=True)


def reset_telemetry_client() -> None:
    """Shut down the process-wide client (within 0.5 s) and forget it.

    The next :func:`~codeweaver_telemetry.get_telemetry_client` builds a fresh client from
    the environment as it is then, so tests never share telemetry state.
    """
    PROCESS.reset()
