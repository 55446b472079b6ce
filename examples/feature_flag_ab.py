"""An A/B test with a PostHog feature flag, against a tiny PostHog stand-in on 127.0.0.1.

A small PostHog-protocol server on the loopback interface answers ``/flags/`` with the
variant ``test`` for the flag ``new_reranker`` and accepts events on ``/batch/``. The client,
given an API key and that host in code, picks a code path with ``get_feature_flag()``
(never raises, waits at most a short budget), lists flags with ``get_all_feature_flags()``,
and every later event carries ``$feature/new_reranker``, so PostHog can split results by
variant. At the end: the local audit log, and the events the server received (what was
actually sent).

Run: ``.venv/bin/python examples/feature_flag_ab.py`` (after ``./scripts/demo`` built the
venv), or ``python examples/feature_flag_ab.py`` with the package installed. No traffic
leaves 127.0.0.1; all state lives in a temporary directory removed at the end.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from codeweaver_telemetry import (
    IntentType,
    MatchSummary,
    SearchResponseSummary,
    SearchStrategy,
    TelemetryClient,
    read_log,
)

FLAGS = {
    "new_reranker": {"key": "new_reranker", "enabled": True, "variant": "test"},
    "fast_index": {"key": "fast_index", "enabled": True, "variant": None},
}
RECEIVED: list[dict[str, Any]] = []  # the events the stand-in server was sent


class PostHogStandIn(http.server.BaseHTTPRequestHandler):
    """Just enough of PostHog: ``/flags/`` answers, ``/batch/`` records."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip" or body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        if self.path.startswith("/flags"):
            answer: dict[str, Any] = {"flags": FLAGS}
        elif self.path.startswith("/batch"):
            RECEIVED.extend(json.loads(body).get("batch", []))
            answer = {"status": 1}
        else:
            self.send_error(404)
            return
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Print nothing per request."""


def rerank_v1(scores: list[float]) -> list[float]:
    return sorted(scores, reverse=True)


def rerank_v2(scores: list[float]) -> list[float]:
    return sorted((min(1.0, s * 1.1) for s in scores), reverse=True)


def main() -> None:
    # Keep the loopback requests off any HTTP proxy configured in the environment.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PostHogStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"  # http:// only for loopback
    try:
        with tempfile.TemporaryDirectory(prefix="codeweaver-example-") as home:
            os.environ["CODEWEAVER_HOME"] = home
            # enabled=True opts in for this example only; a real app asks the user first.
            client = TelemetryClient.from_options(
                enabled=True,
                posthog_api_key="phc_example_not_a_real_project_key",
                posthog_host=host,
                flag_timeout_seconds=2.0,  # loopback is fast; generous for slow machines
                exit_timeout_seconds=5.0,
            )
            with client:
                client.start_session({"version": "0.5.0"})
                variant = client.get_feature_flag("new_reranker", default="control")
                rerank = rerank_v2 if variant == "test" else rerank_v1
                print(f"new_reranker = {variant!r}: using {rerank.__name__}")
                print(f"all flags: {client.get_all_feature_flags()}")
                for query in ("where is auth handled", "why is alice@example.com locked out"):
                    scores = rerank([0.62, 0.81, 0.47])
                    client.capture_search_event(
                        SearchResponseSummary(
                            matches=[MatchSummary(score=s, match_type="semantic") for s in scores]
                        ),
                        query=query,
                        intent_type=IntentType.UNDERSTAND,
                        strategies=[SearchStrategy.HYBRID, SearchStrategy.RERANK],
                        execution_time_ms=35.0,
                    )
            # Leaving the block ended the session and flushed the events to the server.
            show(client, Path(home) / "telemetry")
            client.shutdown()
    finally:
        server.shutdown()
        server.server_close()


def show(client: TelemetryClient, state_dir: Path) -> None:
    audit = list(read_log(state_dir))
    if not client.enabled:
        print(f"telemetry is off ({client.decision.source}: {client.decision.reason})")
        print(f"nothing was recorded for sending ({len(audit)} events in the local log)")
        print(f"the server received {len(RECEIVED)} events")
        return
    print("\n== recorded for sending (local audit log: event, $feature/new_reranker)")
    for event in audit:
        print(f"  {event['event']}: {event['properties'].get('$feature/new_reranker')!r}")
    print(f"\n== received by the PostHog stand-in on 127.0.0.1: {len(RECEIVED)} events")
    for event in RECEIVED:
        print(f"\n{event['event']}")
        print(json.dumps(event["properties"], indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
