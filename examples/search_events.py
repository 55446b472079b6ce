"""Search events: what ``capture_search_event`` sends, and the session's ``searches`` totals.

Each search becomes one ``codeweaver_search`` event holding counts, a score summary and
distributions, never file names or code. The query is sent only as its character and term
counts, unless the call opts in with ``tools_over_privacy=True``: then the scrubbed text
(paths, e-mails and secrets replaced by markers) and a keyed hash are added. Intents and
strategies may be the shipped enums, your own ``str`` enums, or plain strings.

Run it with ``.venv/bin/python examples/search_events.py`` (after ``./scripts/demo`` built
the venv), or with ``python examples/search_events.py`` where the package is installed.
All state lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from codeweaver_telemetry import (
    IntentType,
    MatchSummary,
    SearchResponseSummary,
    SearchStrategy,
    capture_search_event,
    get_telemetry_client,
    read_log,
)

PRIVATE_QUERY = "why does login fail for alice@example.com in /home/alice/acme/auth.py"


def run_searches() -> None:
    response = SearchResponseSummary(
        candidates=40,
        token_count=1800,
        matches=[
            MatchSummary(score=0.91, match_type="semantic"),
            MatchSummary(score=0.84, match_type="semantic"),
            MatchSummary(score=0.52, match_type="keyword"),
        ],
        languages=["python", "python", "rust"],
        index_state="ready",
        index_coverage=0.97,
    )
    capture_search_event(
        response,
        query="where is the retry logic for uploads",
        intent_type=IntentType.UNDERSTAND,
        strategies=[SearchStrategy.HYBRID, SearchStrategy.RERANK],
        execution_time_ms=42.5,
    )
    # A plain-string intent and strategy, and a partial answer with warnings.
    partial = SearchResponseSummary(
        candidates=5,
        matches=[MatchSummary(score=0.4)],
        status="partial",
        warnings=["embedding provider timed out"],
        index_state="indexing",
        index_coverage=0.35,
    )
    capture_search_event(
        partial,
        query="rename helper",
        intent_type="refactor",
        strategies=["keyword"],
        execution_time_ms=8.0,
    )
    # Opted in: the query text is sent, scrubbed. Show the input; the output is below.
    print(f"input query (tools_over_privacy=True): {PRIVATE_QUERY}")
    capture_search_event(
        SearchResponseSummary(matches=[MatchSummary(score=0.77, match_type="semantic")]),
        query=PRIVATE_QUERY,
        intent_type=IntentType.DEBUG,
        strategies=[SearchStrategy.DENSE],
        execution_time_ms=61.2,
        tools_over_privacy=True,
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="codeweaver-example-") as home:
        os.environ["CODEWEAVER_HOME"] = home
        # Opt in for this example only. A real app asks the user first and records the answer.
        os.environ.setdefault("CODEWEAVER__TELEMETRY__ENABLED", "true")
        state_dir = Path(home) / "telemetry"

        with get_telemetry_client() as client:
            client.start_session({"version": "0.5.0"})
            run_searches()
        # The session ended here: its event counts the searches by intent and strategy.

        events = list(read_log(state_dir))
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
                    print("\nthe session's `searches` aggregate:")
                    print(json.dumps(event["properties"]["searches"], indent=2))
        client.shutdown()


if __name__ == "__main__":
    main()
