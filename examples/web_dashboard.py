"""A web app with a telemetry settings page: the ``[web]`` router mounted in a Starlette app.

``telemetry_router()`` is an ASGI router that answers, as JSON, what the CLI answers:
``GET /status``, ``POST /consent``, ``GET /report``, ``GET /payloads``, ``GET /export``,
``POST /delete``, ``GET /flags`` and ``GET /schema``. This script mounts it under
``/settings/telemetry`` next to the app's own home route, serves the app with uvicorn on
127.0.0.1 (a free port) in a background thread, runs a short telemetry session in the same
process, and then calls its own API over HTTP the way the app's settings page would: the
status (on or off, and why), the report (payloads and events per name) and the newest
payloads. Nothing is sent anywhere but 127.0.0.1.

It needs the web extra: ``pip install 'codeweaver-telemetry[web]'``. The router does not
check who is asking, so in a real app it must sit behind the app's own authentication.
For a ready-made dashboard with a token, run ``codeweaver-telemetry serve`` instead.

Run it with ``.venv/bin/python examples/web_dashboard.py`` (after ``./scripts/demo`` built
the venv), or with ``python examples/web_dashboard.py`` where the package is installed.
All state lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from codeweaver_telemetry import (
    IntentType,
    MatchSummary,
    SearchResponseSummary,
    SearchStrategy,
    TelemetryClient,
    capture_search_event,
    get_telemetry_client,
    read_log,
)
from codeweaver_telemetry.web import telemetry_router

SETTINGS = "/settings/telemetry"
# Only ever talk to the local server: ignore any proxy set in the environment.
LOCAL_ONLY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("the app's home page; telemetry settings live under " + SETTINGS)


def build_app() -> Starlette:
    # In a real app, put the app's own authentication in front of the settings mount.
    return Starlette(
        routes=[
            Route("/", home),
            Mount(SETTINGS, app=telemetry_router()),
        ]
    )


class LocalServer:
    """The app served by uvicorn on 127.0.0.1 and a free port, in a daemon thread."""

    def __init__(self, app: Starlette) -> None:
        # Name IPPROTO_TCP: asyncio turns Nagle off only for sockets that say TCP, and with
        # Nagle on, every keep-alive answer waits about 40 ms for a delayed ACK.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError("the local server did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def get(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.port}{path}"
        with LOCAL_ONLY.open(url, timeout=10) as response:
            return response.read().decode("utf-8")

    def get_json(self, path: str) -> dict[str, Any]:
        return json.loads(self.get(path))


def run_session(client: TelemetryClient) -> None:
    client.start_session({"version": "0.5.0", "frontend": "starlette"})
    # With tools_over_privacy=True the query text is sent, but scrubbed to markers first.
    capture_search_event(
        SearchResponseSummary(
            candidates=12,
            matches=[MatchSummary(score=0.88, match_type="semantic")],
            languages=["python"],
        ),
        query="who reviewed alice@example.com's login change",
        intent_type=IntentType.UNDERSTAND,
        strategies=[SearchStrategy.HYBRID],
        execution_time_ms=23.0,
        tools_over_privacy=True,
    )
    client.capture(
        "settings_page_viewed",
        {"section": "telemetry", "opened_from": "/home/alice/acme/settings.toml"},
    )


def show_status(server: LocalServer) -> None:
    status = server.get_json(f"{SETTINGS}/status")
    state = "on" if status["enabled"] else "off"
    print(f"GET {SETTINGS}/status: telemetry is {state}")
    print(f"  decided by: {status['source']}")
    print(f"  why:        {status['reason']}")


def show_dashboard(server: LocalServer) -> None:
    report = server.get_json(f"{SETTINGS}/report")
    print(f"GET {SETTINGS}/report: {report['payloads']} payloads")
    for name, count in sorted(report["events"].items()):
        print(f"  {name}: {count}")
    page = server.get_json(f"{SETTINGS}/payloads?limit=5")
    names = ", ".join(payload["event"] for payload in page["payloads"])
    print(f"GET {SETTINGS}/payloads?limit=5: {page['total']} in all, newest first: {names}")


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
        # Opt in for this example only. A real app asks the user first, for example with a
        # POST to /settings/telemetry/consent from its settings page.
        os.environ.setdefault("CODEWEAVER__TELEMETRY__ENABLED", "true")
        server = LocalServer(build_app())
        server.start()
        try:
            print(f"the app runs on http://127.0.0.1:{server.port}/")
            print(f"GET /: {server.get('/')}")
            with get_telemetry_client() as client:
                run_session(client)
            # Leaving the block ended the session and flushed it to the local log.
            show_status(server)
            if client.enabled:
                show_dashboard(server)
            show_recorded(client, Path(home) / "telemetry")
        finally:
            server.stop()
        client.shutdown()  # before the temporary directory goes away


if __name__ == "__main__":
    main()
