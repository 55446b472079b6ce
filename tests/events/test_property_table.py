"""The README's property table and the events on the wire name the same properties."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from codeweaver_telemetry import (
    MatchSummary,
    SearchResponseSummary,
    get_telemetry_client,
)
from codeweaver_telemetry.testing import capture_events
from tests.helpers import wait_until

README = Path(__file__).resolve().parents[2] / "README.md"


def documented() -> dict[str, set[str]]:
    """event name -> the top-level properties its rows in the README table name."""
    table: dict[str, set[str]] = defaultdict(set)
    event = ""
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not line.startswith("|") or cells[0] == "event":
            continue
        if cells[0].startswith("`codeweaver_"):
            event = cells[0].strip("`")
        first = re.match(r"`([^`.]+)", cells[1])
        if event and first and not first.group(1).startswith("$"):
            table[event].add(first.group(1))
    return table


def sent() -> dict[str, set[str]]:
    """event name -> the top-level properties of each shipped event, every option on."""
    with capture_events() as sink:
        client = get_telemetry_client()
        client._start_heartbeat(0.01)
        client.start_session()
        client.capture_search_event(
            SearchResponseSummary(matches=[MatchSummary(score=1.0)], index_state="ready"),
            "a query",
            "debug",
            ["dense"],
            1.0,
            tools_over_privacy=True,
        )
        try:
            raise ValueError("x")
        except ValueError as exc:
            client.capture_error(exc, include_message=True)
        beat = lambda: any(e["event"] == "codeweaver_heartbeat" for e in sink.events())  # noqa: E731
        assert wait_until(lambda: client.flush(1) and beat(), timeout=10)
        client.capture_session_event(version="1.0")
        client.flush(5)
    out: dict[str, set[str]] = defaultdict(set)
    for event in sink.events():
        out[event["event"]] |= {k for k in event["properties"] if not k.startswith("$")}
    return out


def test_every_property_sent_is_documented_and_every_documented_one_is_sent() -> None:
    """Each shipped event's properties, with every option on, are exactly its README rows."""
    docs = documented()
    wire = sent()
    assert set(docs) == {
        "codeweaver_search",
        "codeweaver_session",
        "codeweaver_error",
        "codeweaver_heartbeat",
    }
    for event, properties in docs.items():
        assert wire[event] - {"schema_version"} == properties, event
