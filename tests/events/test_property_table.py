"""The README's property table and the events on the wire name the same properties."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codeweaver_telemetry import (
    MatchSummary,
    SearchResponseSummary,
    get_telemetry_client,
)
from codeweaver_telemetry.testing import capture_events
from tests.helpers import wait_until

README = Path(__file__).resolve().parents[2] / "README.md"
WILDCARD = "<name>"


def documented() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """event -> documented property paths, and event -> paths documented as maps.

    A cell such as "`quality.avg`, `.min`" names quality.avg and quality.min.
    """
    paths: dict[str, set[str]] = defaultdict(set)
    maps: dict[str, set[str]] = defaultdict(set)
    event = ""
    for line in README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not line.startswith("|") or cells[0] == "event":
            continue
        if cells[0].startswith("`codeweaver_"):
            event = cells[0].strip("`")
        if not event:
            continue
        base: list[str] = []
        for name in re.findall(r"`([^`]+)`", cells[1]):
            if name.startswith("$"):
                continue
            parts = name.split(".")
            if name.startswith("."):
                parts = [*base[:-1], *parts[1:]]
            base = parts
            path = ".".join(parts)
            paths[event].add(path)
            if cells[2].startswith("map"):
                maps[event].add(path)
    return paths, maps


def flatten(value: Any, prefix: str, maps: set[str], wild: set[str]) -> Iterator[str]:
    """The property paths of a payload: maps and wildcard levels as the table names them."""
    for key, item in value.items():
        if key.startswith("$"):
            continue
        path = f"{prefix}{key}"
        if path in maps:
            yield path
        elif isinstance(item, dict) and item:
            if f"{path}.{WILDCARD}" in wild:
                for child in item.values():
                    yield from flatten(child, f"{path}.{WILDCARD}.", maps, wild)
            else:
                yield from flatten(item, f"{path}.", maps, wild)
        else:
            yield path


def sent(maps: dict[str, set[str]], wild: set[str]) -> dict[str, set[str]]:
    """event -> the property paths of each shipped event, with every option on."""
    with capture_events() as sink:
        client = get_telemetry_client()
        client._start_heartbeat(0.01)
        client.start_session()
        client.capture_search_event(
            SearchResponseSummary(
                matches=[MatchSummary(score=1.0)], index_state="ready", index_coverage=0.5
            ),
            "a query",
            "debug",
            ["dense"],
            1.0,
            tools_over_privacy=True,
        )
        client.record_request(ok=True, latency_ms=1.0)
        client.record_setup(True, 1, ["Kind"])
        try:
            try:
                raise KeyError("inner")
            except KeyError as inner:
                raise ValueError("x") from inner
        except ValueError as exc:
            client.capture_error(exc, include_message=True)
        beat = lambda: any(e["event"] == "codeweaver_heartbeat" for e in sink.events())  # noqa: E731
        assert wait_until(lambda: client.flush(1) and beat(), timeout=10)
        client.capture_session_event(version="1.0")
        client.flush(5)
    out: dict[str, set[str]] = defaultdict(set)
    for event in sink.events():
        name = event["event"]
        out[name] |= set(flatten(event["properties"], "", maps[name], wild))
    return out


def test_every_property_sent_is_documented_and_every_documented_one_is_sent() -> None:
    """Each shipped event's property paths, with every option on, are exactly its README
    rows (nested ones too)."""
    docs, maps = documented()
    wild = {p.rsplit(".", 1)[0] for ps in docs.values() for p in ps if f".{WILDCARD}." in p}
    wild = {p for p in wild if p.endswith(WILDCARD)}
    wire = sent(maps, wild)
    assert set(docs) == {
        "codeweaver_search",
        "codeweaver_session",
        "codeweaver_error",
        "codeweaver_heartbeat",
    }
    for event, properties in docs.items():
        assert wire[event] - {"schema_version"} == properties, event
