"""A long-running service: timers, usage counts, errors, failovers and the heartbeat.

A service loop handles requests. ``@client.timer("handle")`` times each call into the
session's ``timings`` (count, avg, min, max, p50, p95; never one event per call),
``@track_usage("...")`` counts calls into ``usage``, ``capture_exceptions()`` sends an error
that escapes a block (then re-raises it; the loop catches it and carries on),
``capture_error(exc)`` sends a handled error, and ``install_excepthook()`` catches what
nobody catches, here in a worker thread. Errors go out as type, ``module:function`` frames
and a keyed fingerprint: never messages, paths or line text.

The heartbeat: with ``CODEWEAVER__TELEMETRY__HEARTBEAT_INTERVAL_SECONDS=300`` a running
process sends one ``codeweaver_heartbeat`` event every 300 seconds (60 at least; unset
means none). This script sets it, but ends long before the first beat.

Run it with ``.venv/bin/python examples/long_running_service.py`` (after ``./scripts/demo``
built the venv), or with ``python examples/long_running_service.py`` where the package is
installed. All state lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

from codeweaver_telemetry import (
    TelemetryClient,
    capture_error,
    capture_exceptions,
    get_telemetry_client,
    install_excepthook,
    read_log,
    track_usage,
)


class UpstreamTimeout(Exception):
    """The embedding provider did not answer in time."""


@track_usage("reindex")
def reindex(n: int) -> None:
    if n % 4 == 3:
        raise ValueError(f"cannot read /home/alice/repo/file{n}.py")  # message is never sent


def serve(client: TelemetryClient) -> None:
    @client.timer("handle")
    @track_usage("handle")
    def handle(n: int) -> str:
        if n % 5 == 4:
            try:
                raise UpstreamTimeout("provider for alice@example.com timed out")
            except UpstreamTimeout as exc:
                capture_error(exc)  # handled: we fall back to the backup provider
                client.record_failover(seconds=0.4)
                return "served by the backup provider"
        return "ok"

    for n in range(10):  # the service loop
        handle(n)
        try:
            with capture_exceptions():  # sends the error as unhandled, then re-raises
                reindex(n)
        except ValueError:
            pass  # the loop carries on


def crash_in_thread() -> None:
    raise RuntimeError("worker crashed")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="codeweaver-example-") as home:
        os.environ["CODEWEAVER_HOME"] = home
        # Opt in for this example only. A real app asks the user first.
        os.environ.setdefault("CODEWEAVER__TELEMETRY__ENABLED", "true")
        # One codeweaver_heartbeat event every 300 s (60 at least); this run ends before the first.
        os.environ.setdefault("CODEWEAVER__TELEMETRY__HEARTBEAT_INTERVAL_SECONDS", "300")
        uninstall = install_excepthook()  # uncaught exceptions become unhandled errors
        with get_telemetry_client() as client:
            print(f"heartbeat every {client.settings.heartbeat_interval_seconds} s")
            client.start_session({"version": "0.5.0", "role": "indexer"})
            serve(client)
            print("a worker thread crashes (its traceback on stderr is the usual one):")
            thread = threading.Thread(target=crash_in_thread)
            thread.start()
            thread.join()
        uninstall()

        events = list(read_log(Path(home) / "telemetry"))
        if not client.enabled:
            print(f"telemetry is off ({client.decision.source}: {client.decision.reason})")
            print(f"nothing was recorded for sending ({len(events)} events in the local log)")
        else:
            print("\n== recorded for sending")
            for event in events:
                print(f"\n{event['event']}")
                print(json.dumps(event["properties"], indent=2, ensure_ascii=False))
            for event in events:
                if event["event"] == "codeweaver_session":
                    print("\nthe session's timings, usage, errors (by fingerprint), failover:")
                    for key in ("timings", "usage", "errors", "failover"):
                        print(f"{key}: {json.dumps(event['properties'][key], indent=2)}")
        client.shutdown()  # stops the heartbeat; before the temporary directory goes away


if __name__ == "__main__":
    main()
