"""An asyncio app: async handlers, concurrent searches, async timers and error capture.

Everything works the same under asyncio. ``async with get_telemetry_client()`` ends the
session and flushes on a worker thread, so the event loop never waits on delivery.
``@timer(...)``, ``@client.timer(...)``, ``@track_usage(...)`` and ``@capture_exceptions()``
decorate ``async def`` functions; ``async with client.timer(...)`` times a block.
``capture_search_event`` is safe to call from many tasks at once (``asyncio.gather``).

Run it with ``.venv/bin/python examples/async_app.py`` (after ``./scripts/demo`` built the
venv), or with ``python examples/async_app.py`` where the package is installed. All state
lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

from codeweaver_telemetry import (
    IntentType,
    MatchSummary,
    SearchResponseSummary,
    SearchStrategy,
    TelemetryClient,
    capture_exceptions,
    capture_search_event,
    get_telemetry_client,
    read_log,
    track_usage,
)
from codeweaver_telemetry.events import timer


@timer("search")  # the module-level helpers find the client when they run
@track_usage("search")
async def search(query: str, intent: IntentType) -> None:
    await asyncio.sleep(0.01)  # the search itself
    capture_search_event(
        SearchResponseSummary(
            candidates=20,
            matches=[MatchSummary(score=0.8, match_type="semantic")],
            languages=["python"],
        ),
        query=query,
        intent_type=intent,
        strategies=[SearchStrategy.HYBRID],
        execution_time_ms=10.0,
    )


@capture_exceptions()  # sent as unhandled, then re-raised to the caller
async def load_index(path: str) -> None:
    await asyncio.sleep(0)
    raise FileNotFoundError(f"no index at {path}")


async def run(client: TelemetryClient) -> None:
    client.start_session({"version": "0.5.0", "runtime": "asyncio"})

    @client.timer("rerank")
    async def rerank() -> None:
        await asyncio.sleep(0.005)

    queries = [
        ("where is auth handled", IntentType.UNDERSTAND),
        ("fix flaky upload test", IntentType.TEST),
        ("mail alice@example.com on failure", IntentType.IMPLEMENT),  # counted, not sent
    ]
    await asyncio.gather(*(search(q, intent) for q, intent in queries))
    async with client.timer("warm_cache"):
        await rerank()
    try:
        await load_index("/home/alice/.cache/acme/index")
    except FileNotFoundError:
        print("load_index failed; the app goes on without the cache")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="codeweaver-example-") as home:
        os.environ["CODEWEAVER_HOME"] = home
        # Opt in for this example only. A real app asks the user first.
        os.environ.setdefault("CODEWEAVER__TELEMETRY__ENABLED", "true")
        async with get_telemetry_client() as client:
            await run(client)

        events = list(read_log(Path(home) / "telemetry"))
        if not client.enabled:
            print(f"telemetry is off ({client.decision.source}: {client.decision.reason})")
            print(f"nothing was recorded for sending ({len(events)} events in the local log)")
        else:
            print("\n== recorded for sending")
            for event in events:
                print(f"\n{event['event']}")
                print(json.dumps(event["properties"], indent=2, ensure_ascii=False))
        client.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
