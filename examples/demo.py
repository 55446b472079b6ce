"""The demo: privacy rules, the scrubber, and a telemetry session on the local sink.

No PostHog account and no network: with no API key, events that pass consent and the
privacy pipeline go to a local JSON Lines log. The demo keeps its state in a temporary
directory, removed at the end, so it never touches your real telemetry state.

Run it with ``./scripts/demo``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from codeweaver_telemetry import (
    AnonymityConversion,
    BasedModel,
    FilteredKey,
    TelemetryClient,
    TelemetrySettings,
    read_log,
    scrub,
)
from codeweaver_telemetry.testing import capture_events


class MatchSummary(BasedModel):
    """One search hit, as an app might model it."""

    file_path: str
    language: str
    score: float

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {FilteredKey("file_path"): AnonymityConversion.HASH}


class SearchSummary(BasedModel):
    """A strict model: only the fields it names leave the machine."""

    _telemetry_strict: ClassVar[bool] = True
    _telemetry_trusted: ClassVar[frozenset[str]] = frozenset({"intent"})

    query: str
    intent: str
    user_email: str
    matches: list[MatchSummary] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)

    def _telemetry_keys(self) -> dict[FilteredKey, AnonymityConversion]:
        return {
            FilteredKey("query"): AnonymityConversion.TEXT_COUNT,
            FilteredKey("matches"): AnonymityConversion.COUNT,
            FilteredKey("languages"): AnonymityConversion.DISTRIBUTION,
        }


def show(title: str, value: Any) -> None:
    print(f"\n== {title}")
    print(json.dumps(value, indent=2, ensure_ascii=False) if not isinstance(value, str) else value)


def main() -> None:
    summary = SearchSummary(
        query="how does authentication work in /home/alice/acme-secret-project",
        intent="understand",
        user_email="alice@example.com",
        matches=[
            MatchSummary(file_path="/home/alice/acme/auth.py", language="python", score=0.91),
            MatchSummary(file_path="/home/alice/acme/login.rs", language="rust", score=0.84),
        ],
        languages=["python", "rust", "python"],
    )
    show("1. A model as the app holds it", summary.model_dump())
    show("   ... and what serialize_for_telemetry() lets out", summary.serialize_for_telemetry())

    line = (
        'File "/home/alice/app/main.py", line 3: connect(password=hunter2) to 10.0.0.12 '
        "as alice@example.com with Bearer abcdef1234567890abcdef, token ghp_" + "x" * 36
    )
    show("2. The scrubber on a log line", f"in : {line}\nout: {scrub(line)}")

    state_dir = Path(tempfile.mkdtemp(prefix="codeweaver-telemetry-demo-"))
    client = TelemetryClient(TelemetrySettings(enabled=True, state_dir=state_dir))
    print(f"\n== 3. A session on the local sink (state in {state_dir})")
    print(f"   telemetry on: {client.enabled} ({client.decision.source}: {client.decision.reason})")
    if client.enabled:
        with client:
            client.start_session({"version": "0.5.0", "backend": "qdrant"})
            client.capture_with_serialization("codeweaver_search", summary)
            client.capture("index_built", {"files": 1204, "root": "/home/alice/acme"})
        events = list(read_log(state_dir))
        print(f"   {len(events)} events in {state_dir / 'events.jsonl'}:")
    else:
        print("   Off means off: nothing is written or sent. Preview of what would be sent:")
        with capture_events() as sink:
            from codeweaver_telemetry import get_telemetry_client

            preview = get_telemetry_client()
            preview.start_session({"version": "0.5.0", "backend": "qdrant"})
            preview.capture_with_serialization("codeweaver_search", summary)
            preview.capture("index_built", {"files": 1204, "root": "/home/alice/acme"})
            preview.end_session()
        events = sink.events()
    for event in events:
        show(event["event"], event["properties"])
    shutil.rmtree(state_dir, ignore_errors=True)
    print(f"\n(removed the demo's state directory {state_dir})")


if __name__ == "__main__":
    main()
