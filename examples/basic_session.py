"""A basic telemetry session: metadata, a few events, counters, a timer, and a preview.

It shows the everyday calls of the process-wide client: ``start_session`` with metadata,
``capture``, ``record_request``, ``record_usage``, ``timer``, and ``preview()``, which shows
the session event exactly as it would be sent, before the session ends. With no PostHog
key, events go to the local JSON Lines log only, and the script prints that log at the end.

Run it with ``.venv/bin/python examples/basic_session.py`` (after ``./scripts/demo`` built
the venv), or with ``python examples/basic_session.py`` where the package is installed.
All state lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from codeweaver_telemetry import TelemetryClient, get_telemetry_client, read_log


def run_session() -> TelemetryClient:
    with get_telemetry_client() as client:
        # Metadata goes on every event of the session, after the privacy pipeline.
        client.start_session(
            {"version": "0.5.0", "backend": "qdrant", "workspace": "/home/alice/acme"}
        )
        client.capture("index_built", {"files": 1204, "languages": ["python", "rust"]})
        # Paths and e-mails in what you pass are scrubbed to markers before anything leaves.
        client.capture(
            "settings_changed",
            {"theme": "dark", "config": "/home/alice/.config/acme.toml", "by": "alice@example.com"},
        )
        client.record_request(ok=True, latency_ms=12.5)
        client.record_request(ok=False, latency_ms=250.0)
        client.record_usage("export", 2)
        with client.timer("index"):
            time.sleep(0.02)  # the work being timed

        print("== preview: the session event as it would be sent now (not sent yet)")
        preview = client.preview()
        if preview is None:
            print("(no preview: telemetry is off)")
        else:
            print(json.dumps(preview["properties"], indent=2))
    # Leaving the block ended the session (one codeweaver_session event) and flushed.
    return client


def show_recorded(client: TelemetryClient, state_dir: Path) -> None:
    events = list(read_log(state_dir))
    if not client.enabled:
        print(f"telemetry is off ({client.decision.source}: {client.decision.reason})")
        print(f"nothing was recorded for sending ({len(events)} events in the local log)")
        return
    print("\n== recorded for sending")
    for event in events:
        print(f"\n{event['event']}")
        print(json.dumps(event["properties"], indent=2, ensure_ascii=False))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="codeweaver-example-") as home:
        os.environ["CODEWEAVER_HOME"] = home  # state dir: <home>/telemetry
        # Opt in for this example only. A real app asks the user first and records the answer
        # (for example with `codeweaver-telemetry enable`).
        os.environ.setdefault("CODEWEAVER__TELEMETRY__ENABLED", "true")
        client = run_session()
        show_recorded(client, Path(home) / "telemetry")
        client.shutdown()  # before the temporary directory goes away


if __name__ == "__main__":
    main()
