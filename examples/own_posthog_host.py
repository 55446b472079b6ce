"""Send to your own PostHog host: by environment, by code, and what a bad host value does.

Two ways to point the client at a PostHog host (self-hosted, or a reverse proxy you run):

1. the environment: ``CODEWEAVER__TELEMETRY__POSTHOG_HOST`` and the project key in
   ``CODEWEAVER_POSTHOG_API_KEY`` (or ``CODEWEAVER__TELEMETRY__POSTHOG_API_KEY``);
2. code: ``TelemetryClient.from_options(posthog_host=..., posthog_api_key=...)``.

The host must be an ``https://`` URL; ``http://`` is accepted only for loopback hosts
(127.0.0.1, ::1, localhost), which is what this script uses: a tiny PostHog stand-in on
127.0.0.1 receives the events. A bad value such as ``http://example.com`` is reported once
as a warning, and telemetry stays off; it never raises into your program.

Run it with ``.venv/bin/python examples/own_posthog_host.py`` (after ``./scripts/demo``
built the venv), or with ``python examples/own_posthog_host.py`` where the package is
installed. No traffic leaves 127.0.0.1; all state lives in a temporary directory.
"""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from codeweaver_telemetry import TelemetryClient, get_telemetry_client, read_log

RECEIVED: list[dict[str, Any]] = []  # the events the stand-in server was sent


class PostHogStandIn(http.server.BaseHTTPRequestHandler):
    """Accepts ``/batch/`` (gzip or plain JSON); answers ``/flags/`` with no flags."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip" or body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        if self.path.startswith("/batch"):
            RECEIVED.extend(json.loads(body).get("batch", []))
        data = json.dumps({"status": 1, "flags": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Print nothing per request."""


def report(label: str, client: TelemetryClient) -> None:
    state = "on" if client.enabled else "off"
    print(f"{label}: telemetry is {state} ({client.decision.source}: {client.decision.reason})")


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(message)s"
    )
    # Keep the loopback requests off any HTTP proxy configured in the environment.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PostHogStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"  # http:// only for loopback
    try:
        with tempfile.TemporaryDirectory(prefix="codeweaver-example-") as home:
            os.environ["CODEWEAVER_HOME"] = home
            # Opt in for this example only. A real app asks the user first.
            os.environ.setdefault("CODEWEAVER__TELEMETRY__ENABLED", "true")

            # 1. By environment: what a deployment sets, no code change needed.
            os.environ["CODEWEAVER__TELEMETRY__POSTHOG_HOST"] = host
            os.environ["CODEWEAVER_POSTHOG_API_KEY"] = "phc_example_not_a_real_project_key"
            with get_telemetry_client() as client:
                report("1. by environment", client)
                client.capture("configured_by", {"how": "environment", "home": "/home/alice"})
            client.shutdown()
            print(f"   the server has received {len(RECEIVED)} events")
            del os.environ["CODEWEAVER__TELEMETRY__POSTHOG_HOST"]
            del os.environ["CODEWEAVER_POSTHOG_API_KEY"]

            # 2. By code: the same names as the settings; code beats the environment.
            client = TelemetryClient.from_options(
                posthog_host=host, posthog_api_key="phc_example_not_a_real_project_key"
            )
            with client:
                report("2. by code", client)
                client.capture("configured_by", {"how": "code", "contact": "alice@example.com"})
            client.shutdown()
            print(f"   the server has received {len(RECEIVED)} events")

            # 3. A bad host: http:// to a host that is not loopback. One warning, then off.
            print("3. posthog_host='http://example.com' (input):")
            bad = TelemetryClient.from_options(
                posthog_host="http://example.com", posthog_api_key="phc_example_not_a_real_key"
            )
            report("   bad host", bad)
            bad.shutdown()

            show(Path(home) / "telemetry")
    finally:
        server.shutdown()
        server.server_close()


def show(state_dir: Path) -> None:
    audit = list(read_log(state_dir))
    if not RECEIVED and not audit:
        print(f"nothing was recorded for sending ({len(audit)} events in the local log)")
        return
    print(f"\n== recorded for sending ({len(audit)} events in the local audit log)")
    for event in audit:
        print(f"  {event['event']}: {event['properties'].get('how')}")
    print(f"\n== received by the PostHog stand-in on 127.0.0.1: {len(RECEIVED)} events")
    for event in RECEIVED:
        print(f"\n{event['event']}")
        print(json.dumps(event["properties"], indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
