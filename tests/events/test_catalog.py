"""The event schema: derived from the models, equal to the README table and to the wire."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from codeweaver_telemetry import MatchSummary, SearchResponseSummary, get_telemetry_client
from codeweaver_telemetry._types import FLAG_CALLED_EVENT, LIBRARY_KEYS
from codeweaver_telemetry.events import catalog
from codeweaver_telemetry.events.catalog import (
    ALL_EVENTS,
    FLAG_PATH,
    WILDCARD,
    json_schemas,
    markdown_table,
    schema_document,
    schema_rows,
)
from codeweaver_telemetry.testing import capture_events
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
START, END = "<!-- schema:start -->\n", "<!-- schema:end -->"
PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
    "object": (dict,),
    "array": (list,),
}


def readme_table() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split(START, 1)[1].split(END, 1)[0]


def test_readme_table_is_generated_from_the_models() -> None:
    """The README's table between the schema markers is exactly markdown_table(); run
    scripts/gen-schema-table after changing an event model."""
    assert readme_table() == markdown_table()


def test_gen_schema_table_check_passes() -> None:
    """scripts/gen-schema-table --check finds the README up to date."""
    script = ROOT / "scripts" / "gen-schema-table"
    done = subprocess.run([sys.executable, str(script), "--check"], check=False)
    assert done.returncode == 0


def test_library_keys_are_all_described() -> None:
    """Every $ property the pipeline may set has a meaning, a type and a rule."""
    assert set(catalog._LIBRARY) == set(LIBRARY_KEYS)


def test_every_property_has_a_meaning_type_and_rule() -> None:
    """No row is missing a part, and no event names a path twice."""
    rows = schema_rows()
    seen: set[tuple[str, str]] = set()
    for row in rows:
        assert all((row.path, row.json_type, row.meaning, row.rule)), row
        assert (row.event, row.path) not in seen
        seen.add((row.event, row.path))
    events = {row.event for row in rows}
    assert events == {
        "codeweaver_search",
        "codeweaver_session",
        "codeweaver_error",
        "codeweaver_heartbeat",
        FLAG_CALLED_EVENT,
        ALL_EVENTS,
    }


def test_json_schemas_are_draft_2020_12_with_description_and_rule() -> None:
    """Each schema names its dialect and every property, at every depth, has a
    description and an x-privacy-rule; the document is valid JSON."""

    def walk(schema: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
        for prop in schema.get("properties", {}).values():
            yield prop
            for option in [prop, *prop.get("anyOf", ())]:
                yield from walk(option)
                extra = option.get("additionalProperties")
                if isinstance(extra, dict):
                    yield from walk(extra)

    schemas = json_schemas()
    for name, schema in schemas.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["title"] == name
        assert schema["description"]
        for prop in walk(schema):
            assert prop["description"], name
            assert prop["x-privacy-rule"], name
    document = json.loads(schema_document(as_json=True))
    assert document == {"schema_version": 1, "events": schemas}


def test_the_text_document_lists_every_row() -> None:
    """The CLI's human text has one line per row."""
    text = schema_document()
    for row in schema_rows():
        assert any(row.path in line and row.rule in line for line in text.splitlines()), row


# -- the schema against the wire -------------------------------------------------------------------
def wire_events() -> list[dict[str, Any]]:
    """Every shipped event, through the real client, with every optional part filled."""
    with capture_events() as sink:
        client = get_telemetry_client()
        client._start_heartbeat(0.01)
        client.start_session()
        client.get_feature_flag("beta", default="control")
        client.capture_search_event(
            SearchResponseSummary(
                candidates=3,
                matches=[MatchSummary(score=1.0, match_type="semantic")],
                languages=["python"],
                warnings=["w"],
                index_state="ready",
                index_coverage=0.5,
            ),
            "a query",
            "debug",
            ["dense"],
            1.0,
            tools_over_privacy=True,
            feature_flags={"beta": "test"},
        )
        client.record_request(ok=True, latency_ms=1.0)
        client.record_tokens(generated=3, delivered=2, saved=1)
        client.record_languages(["python"])
        client.record_failover(1.5)
        client.record_setup(True, 1, ["Kind"])
        client.record_usage("reindex")
        with client.timer("embed"):
            pass
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
    return list(sink.events())


def check(value: Any, schema: Mapping[str, Any], path: str, seen: set[str], where: str) -> None:
    """Check ``value`` against ``schema`` (the subset the catalog writes); record leaf paths."""
    options = list(schema.get("anyOf", ())) or [schema]
    if value is None:
        assert any(o.get("type") == "null" or "null" in o.get("type", ()) for o in options), where
        seen.add(path)
        return
    option = next(o for o in options if o.get("type") != "null")
    if "const" in option:
        assert value == option["const"], where
        assert type(value) is type(option["const"]), where
        seen.add(path)
        return
    kinds = option["type"] if isinstance(option["type"], list) else [option["type"]]
    ok = any(
        isinstance(value, PY_TYPES[k]) and not (isinstance(value, bool) and k != "boolean")
        for k in kinds
    )
    assert ok, f"{where}: {value!r} is not {kinds}"
    if "pattern" in option:
        assert len(value) == 16, where
        assert set(value) <= set("0123456789abcdef"), where
    if isinstance(value, dict) and "properties" in option:
        assert set(option["required"]) <= set(value), where
        for key, item in value.items():
            assert key in option["properties"], f"{where}.{key} is not in the schema"
            check(item, option["properties"][key], f"{path}{key}", seen, f"{where}.{key}")
        return
    if isinstance(value, dict):
        extra = option["additionalProperties"]
        if "properties" in extra:
            for key, item in value.items():
                check(item, extra, f"{path}.{WILDCARD}.", seen, f"{where}.{key}")
            return
        for item in value.values():
            check(item, extra, path, set(), where)
    if isinstance(value, list):
        for item in value:
            check(item, option["items"], path, set(), where)
    seen.add(path)


def nested_paths(value: Any, schema: Mapping[str, Any], prefix: str, seen: set[str]) -> None:
    """Leaf paths of a top-level property value, dotted as the rows write them."""
    option = next((o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"), schema)
    if isinstance(value, dict) and "properties" in option:
        for key, item in value.items():
            assert key in option["properties"], f"{prefix}{key} is not in the schema"
            nested_paths(item, option["properties"][key], f"{prefix}{key}.", seen)
        return
    if isinstance(value, dict) and "properties" in option.get("additionalProperties", {}):
        for item in value.values():
            nested_paths(item, option["additionalProperties"], f"{prefix}{WILDCARD}.", seen)
        return
    check(value, schema, prefix.rstrip("."), seen, prefix.rstrip("."))


def test_the_schema_is_what_the_events_send_path_by_path() -> None:
    """Built through the real client with every option on, each event's properties are
    all in its schema with the right JSON type, and every row of the schema occurs
    (``$feature_flag_called`` aside: it needs a flag host)."""
    schemas = json_schemas()
    rows: dict[str, set[str]] = defaultdict(set)
    for row in schema_rows():
        rows[row.event].add(row.path)
    sent: dict[str, set[str]] = defaultdict(set)
    for event in wire_events():
        name, props = event["event"], event["properties"]
        schema = schemas[name]
        assert set(schema["required"]) <= set(props), name
        for key, value in props.items():
            if key.startswith("$feature/"):
                check(value, schema["patternProperties"]["^\\$feature/"], FLAG_PATH, set(), key)
                sent[ALL_EVENTS].add(FLAG_PATH)
            elif key.startswith("$"):
                check(value, schema["properties"][key], key, set(), f"{name}.{key}")
                sent[name if key in catalog._EXPOSURE_ONLY else ALL_EVENTS].add(key)
            else:
                assert key in schema["properties"], f"{name}.{key} is not in the schema"
                nested_paths(value, schema["properties"][key], f"{key}.", sent[name])
    # $feature_flag_called needs flags from a PostHog host; tests/test_flags.py covers it.
    del rows[FLAG_CALLED_EVENT]
    assert set(sent) == set(rows)
    for event, paths in rows.items():
        assert sent[event] == paths, event


@pytest.mark.parametrize("name", ["codeweaver_search", "codeweaver_error"])
def test_optional_properties_are_absent_not_null_by_default(name: str) -> None:
    """Properties the schema does not require (query.text, message...) are the ones the
    models leave out when unused."""
    schema = json_schemas()[name]
    optional = set(schema["properties"]) - set(schema["required"])
    assert optional <= {"message", "$session_id", "query"} | set(LIBRARY_KEYS)
