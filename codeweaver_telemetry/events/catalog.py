# SPDX-License-Identifier: MIT OR Apache-2.0
"""The schema of every event the library ships, derived from the event models themselves.

Each shipped event model (:class:`~codeweaver_telemetry.events.schemas.SearchEvent`,
``SessionEvent``, ``ErrorEvent``, ``HeartbeatEvent``) declares its properties as fields whose
type says the JSON type and whose :class:`~codeweaver_telemetry.events._props.Prop` marker
says the meaning; its privacy rules (``_telemetry_rules``, ``_telemetry_allow``,
``_telemetry_trusted``, strictness) say which fields leave the machine and how. This module
reads them and gives the property table (:func:`schema_rows`, the README's table and the
CLI's text) and one JSON Schema (draft 2020-12) per event (:func:`json_schemas`). The
library's own ``$`` properties (:data:`~codeweaver_telemetry._types.LIBRARY_KEYS`) and the
exposure event ``$feature_flag_called`` have no model: they are described here, once.

Privacy rules, as named in the table and in each property's ``x-privacy-rule``:
``hash``, ``count``, ``boolean``, ``distribution``, ``aggregate``, ``text count`` (the
conversions of :class:`~codeweaver_telemetry.privacy.rules.AnonymityConversion`), ``as-is``
(a number or boolean the library computed), ``scrubbed`` (a string through the scrubber),
``trusted`` (sent without the scrubber), ``label`` (an app-given label: scrubbed, cut to 64
characters), ``label keys`` / ``hash keys`` / ``type-name keys`` (a map of counts keyed so),
and ``scrubbed, then cut to 200``.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Union

import attrs

from codeweaver_telemetry._types import FLAG_CALLED_EVENT, LIBRARY_KEYS
from codeweaver_telemetry.events import schemas as _schemas
from codeweaver_telemetry.events import stats as _stats
from codeweaver_telemetry.events._props import Prop
from codeweaver_telemetry.events.schemas import (
    SCHEMA_VERSION,
    ErrorEvent,
    HeartbeatEvent,
    SearchEvent,
    SessionEvent,
    ShippedEvent,
)
from codeweaver_telemetry.privacy.rules import AnonymityConversion, FilteredKey

__all__ = [
    "ALL_EVENTS",
    "EVENT_MODELS",
    "FLAG_PATH",
    "JSON_SCHEMA_DIALECT",
    "WILDCARD",
    "Row",
    "json_schemas",
    "markdown_table",
    "schema_document",
    "schema_rows",
]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The ``$schema`` of every schema :func:`json_schemas` gives."""
EVENT_MODELS: tuple[type[ShippedEvent], ...] = (
    SearchEvent,
    SessionEvent,
    ErrorEvent,
    HeartbeatEvent,
)
"""The models of the shipped events, in table order."""
ALL_EVENTS = "*"
"""The ``event`` of a :class:`Row` that every event may carry."""
WILDCARD = "<name>"
"""The path segment standing for any key of a map of objects (``timings.<name>.count``)."""
FLAG_PATH = "$feature/<key>"
"""The path of the flag properties (one per flag)."""

_NAMES: dict[str, Any] = {**vars(_stats), **vars(_schemas)}
"""What the models' annotations may name."""
_HASH_PATTERN = "^[0-9a-f]{16}$"
_FLAG_VALUE: dict[str, Any] = {"type": ["string", "boolean", "number"]}
_LIBRARY: dict[str, tuple[dict[str, Any], str, str]] = {
    "$lib": ({"const": "codeweaver-telemetry"}, "this library", "as-is"),
    "$lib_version": ({"type": "string"}, "this library's version", "as-is"),
    "$os": ({"type": "string"}, "`platform.system()` (`Mac OS X` for Darwin)", "as-is"),
    "$os_version": (
        {"type": "string"},
        "the OS release, leading version numbers only",
        "as-is",
    ),
    "$python_version": ({"type": "string"}, "Python's version, `3.11.7`", "as-is"),
    "$geoip_disable": ({"const": True}, "PostHog adds no GeoIP data", "as-is"),
    "$process_person_profile": (
        {"const": False},
        "PostHog keeps no person profile",
        "as-is",
    ),
    "$session_id": ({"type": "string"}, "the session's UUIDv7; in a session only", "as-is"),
    "$feature_flag": (
        {"type": "string"},
        "the flag's key, when `get_feature_flag()` reads a value (once per flag and value per "
        "session; off with `SEND_FEATURE_FLAG_EVENTS=false`)",
        "scrubbed",
    ),
    "$feature_flag_response": (_FLAG_VALUE, "the variant or true/false read", "scrubbed"),
}
"""JSON Schema, meaning and rule of each of LIBRARY_KEYS (a test holds the two equal)."""
_EXPOSURE_ONLY = ("$feature_flag", "$feature_flag_response")


@dataclass(frozen=True, slots=True)
class Row:
    """One property of one event, as the table shows it.

    ``event`` is :data:`ALL_EVENTS` for what every event may carry; ``path`` is dotted, with
    :data:`WILDCARD` for any key of a map of objects; ``json_type`` names the JSON types
    (``integer or null``, ``array of string``, ``map string → integer``).
    """

    event: str
    path: str
    json_type: str
    meaning: str
    rule: str


# -- reading the models ---------------------------------------------------------------------------
def _unwrap(hint: Any) -> tuple[Any, Prop | None]:
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        return base, next((e for e in extras if isinstance(e, Prop)), None)
    return hint, None


def _nullable(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def _is_typeddict(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__total__")


def _with_null(schema: dict[str, Any], nullable: bool) -> dict[str, Any]:
    if not nullable:
        return schema
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _scalar(hint: Any) -> dict[str, Any]:
    for python, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if hint is python:
            return {"type": name}
    raise TypeError(f"no JSON type for {hint!r}")


def _default_rule(hint: Any, conversion: AnonymityConversion | None, trusted: bool) -> str:
    if conversion is not None:
        return conversion.value.replace("_", " ")
    if trusted:
        return "trusted"
    return "scrubbed" if hint is str or str in typing.get_args(hint) else "as-is"


def _converted(conversion: AnonymityConversion, nullable: bool) -> dict[str, Any]:
    """The wire schema of a field under a conversion (see the conversions' table)."""
    if conversion is AnonymityConversion.HASH:
        return _with_null({"type": "string", "pattern": _HASH_PATTERN}, nullable)
    if conversion is AnonymityConversion.DISTRIBUTION:
        return {"type": "object", "additionalProperties": {"type": "integer"}}
    if conversion is AnonymityConversion.BOOLEAN:
        return {"type": "boolean"}
    if conversion is AnonymityConversion.AGGREGATE:
        return {"type": "number"}
    return {"type": "integer"}  # COUNT, TEXT_COUNT


def _type_schema(hint: Any, rule: str | None) -> dict[str, Any]:
    """The JSON Schema of a (non-Annotated) type: scalars, sequences, maps, nested models."""
    hint, nullable = _nullable(hint)
    origin = typing.get_origin(hint)
    if attrs.has(hint):
        return _with_null(_model_schema(hint, rule), nullable)
    if _is_typeddict(hint):
        return _with_null(_typeddict_schema(hint, rule), nullable)
    if origin in (tuple, list):
        item = typing.get_args(hint)[0]
        return _with_null({"type": "array", "items": _type_schema(item, rule)}, nullable)
    if origin is dict:
        value = typing.get_args(hint)[1]
        return _with_null(
            {"type": "object", "additionalProperties": _type_schema(value, rule)}, nullable
        )
    return _with_null(_scalar(hint), nullable)


def _property(
    hint: Any,
    conversion: AnonymityConversion | None,
    trusted: bool,
    inherited: str | None,
    where: str,
) -> tuple[dict[str, Any], bool]:
    """One property's schema (with description and x-privacy-rule), and whether it is
    always present."""
    base, prop = _unwrap(hint)
    if prop is None:
        raise TypeError(f"{where} has no Prop(meaning) marker")
    if conversion is not None and prop.rule not in (None, conversion.value.replace("_", " ")):
        raise TypeError(f"{where}: Prop rule {prop.rule!r} contradicts the model's {conversion}")
    wire = prop.wire if prop.wire is not None else base
    inner, nullable = _nullable(wire)
    nullable = nullable or _nullable(base)[1]
    rule = prop.rule or inherited or _default_rule(inner, conversion, trusted)
    if conversion is not None and conversion is not AnonymityConversion.FORBIDDEN:
        schema = _converted(conversion, nullable and not prop.omitted_when_none)
    else:
        schema = _type_schema(inner, None)
        if rule == "hash" and schema == {"type": "string"}:
            schema["pattern"] = _HASH_PATTERN
        schema = _with_null(schema, nullable and not prop.omitted_when_none)
    schema = {"description": prop.meaning, **schema, "x-privacy-rule": rule}
    return schema, not prop.omitted_when_none


def _object(
    properties: dict[str, dict[str, Any]], required: list[str], doc: str | None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    if doc:
        schema["description"] = doc.strip().splitlines()[0]
    schema.update(properties=properties, required=required, additionalProperties=False)
    return schema


def _model_schema(cls: type[Any], inherited: str | None = None) -> dict[str, Any]:
    """An attrs model as its strict serialization sends it."""
    rules: Mapping[FilteredKey, AnonymityConversion] = getattr(cls, "_telemetry_rules", None) or {}
    if "_telemetry_keys" in vars(cls):
        raise TypeError(f"{cls.__qualname__}: declare its rules as _telemetry_rules")
    conversions = {str(key): conv for key, conv in rules.items()}
    allow: frozenset[str] = getattr(cls, "_telemetry_allow", frozenset())
    trusted: frozenset[str] = getattr(cls, "_telemetry_trusted", frozenset())
    strict: bool = getattr(cls, "_telemetry_strict", False)
    # Only the fields' own annotations: a base class's may name what its module imports
    # for type checking alone.
    own = {field.name: field.type for field in attrs.fields(cls)}
    holder = type("_Fields", (), {"__annotations__": own})
    hints = typing.get_type_hints(holder, _NAMES, include_extras=True)
    properties: dict[str, dict[str, Any]] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        name = field.name
        conversion = conversions.get(name)
        if conversion is AnonymityConversion.FORBIDDEN:
            continue
        if strict and conversion is None and name not in allow and name not in trusted:
            continue
        schema, always = _property(
            hints[name], conversion, name in trusted, inherited, f"{cls.__qualname__}.{name}"
        )
        properties[name] = schema
        if always:
            required.append(name)
    return _object(properties, required, cls.__doc__)


def _typeddict_schema(cls: type[Any], inherited: str | None) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, _NAMES, include_extras=True)
    properties = {
        name: _property(hint, None, False, inherited, f"{cls.__qualname__}.{name}")[0]
        for name, hint in hints.items()
    }
    return _object(properties, list(hints), cls.__doc__)


# -- the outputs ----------------------------------------------------------------------------------
def _library_schema(key: str) -> dict[str, Any]:
    schema, meaning, rule = _LIBRARY[key]
    return {"description": meaning, **schema, "x-privacy-rule": rule}


_FLAGS: dict[str, Any] = {
    "description": "flag values: those given, else those looked up in the session",
    **_FLAG_VALUE,
    "x-privacy-rule": "key and value scrubbed",
}
_ALWAYS = ("$lib", "$lib_version", "$os", "$os_version", "$python_version")
_ALWAYS_SET = ("$geoip_disable", "$process_person_profile")


def _event_schema(name: str, description: str, own: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = dict(own["properties"])
    required: list[str] = list(own["required"])
    for key in sorted(LIBRARY_KEYS):
        if key in _EXPOSURE_ONLY and name != FLAG_CALLED_EVENT:
            continue
        properties[key] = _library_schema(key)
        if key in _ALWAYS or key in _ALWAYS_SET or key in _EXPOSURE_ONLY:
            required.append(key)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"codeweaver_telemetry/events/{name}.json",
        "title": name,
        "description": description,
        "x-schema-version": SCHEMA_VERSION,
        "type": "object",
        "properties": properties,
        "required": required,
        "patternProperties": {"^\\$feature/": _FLAGS},
        "additionalProperties": {
            "description": "the session metadata the app passed to `start_session()`, "
            "through its own rules and the scrubber"
        },
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema (draft 2020-12) per shipped event, keyed by event name.

    Each property has a ``description`` and an ``x-privacy-rule``; ``$feature/<key>`` is a
    ``patternProperties`` entry, and further top-level keys can only be the session metadata
    the app passed.

    Returns:
        A new dict, ``{event name: schema}``, in table order, ``$feature_flag_called`` last.

    """
    out: dict[str, dict[str, Any]] = {}
    for model in EVENT_MODELS:
        doc = (model.__doc__ or "").strip().splitlines()[0]
        own = _model_schema(model)
        out[model.EVENT_NAME] = _event_schema(model.EVENT_NAME, doc, own)
    out[FLAG_CALLED_EVENT] = _event_schema(
        FLAG_CALLED_EVENT,
        f"``{FLAG_CALLED_EVENT}``: PostHog's exposure event, sent when the app reads a flag.",
        {"properties": {}, "required": []},
    )
    return out


def _type_text(schema: Mapping[str, Any]) -> str:
    if "const" in schema:
        return json.dumps(schema["const"]).replace('"', "")
    if "anyOf" in schema:
        return " or ".join(_type_text(s) for s in schema["anyOf"])
    kinds = schema.get("type", [])
    names: list[str] = []
    for kind in [kinds] if isinstance(kinds, str) else kinds:
        if kind == "array":
            names.append(f"array of {_type_text(schema['items'])}")
        elif kind == "object" and "properties" not in schema:
            names.append(f"map string → {_type_text(schema['additionalProperties'])}")
        elif kind == "string" and "pattern" in schema:
            names.append("string (16 hex)")
        else:
            names.append(kind)
    return " or ".join(names)


def _leaves(
    schema: Mapping[str, Any], prefix: str, keys: str = ""
) -> Iterator[tuple[str, Mapping[str, Any], str]]:
    """(dotted path, schema, rule) of each leaf: a scalar, an array or a map of scalars;
    under a map of objects, the rule names the map's keys' rule first."""
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        value = _non_null(prop)
        if "properties" in value:
            yield from _leaves(value, f"{path}.", keys)
        elif "properties" in value.get("additionalProperties", {}):
            rule = f"{prop['x-privacy-rule']}, "
            yield from _leaves(value["additionalProperties"], f"{path}.{WILDCARD}.", rule)
        else:
            yield path, prop, keys + prop["x-privacy-rule"]


def _non_null(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    for option in schema.get("anyOf", ()):
        if option.get("type") != "null":
            return typing.cast("Mapping[str, Any]", option)
    return schema


def schema_rows() -> list[Row]:
    """Every property of every shipped event, one :class:`Row` per leaf path.

    Each model event's own properties (``schema_version`` included) come first, then
    ``$feature_flag_called``'s own, then, under :data:`ALL_EVENTS`, the library's ``$``
    properties and ``$feature/<key>``.

    """
    schemas = json_schemas()
    rows: list[Row] = []
    for name, schema in schemas.items():
        own = {
            k: v
            for k, v in schema["properties"].items()
            if k not in _LIBRARY or (name == FLAG_CALLED_EVENT and k in _EXPOSURE_ONLY)
        }
        for path, prop, rule in _leaves({"properties": own}, ""):
            rows.append(Row(name, path, _type_text(prop), prop["description"], rule))
    for key in sorted(LIBRARY_KEYS):
        if key not in _EXPOSURE_ONLY:
            prop = _library_schema(key)
            rows.append(
                Row(ALL_EVENTS, key, _type_text(prop), prop["description"], prop["x-privacy-rule"])
            )
    rows.append(
        Row(
            ALL_EVENTS,
            FLAG_PATH,
            _type_text(_FLAGS),
            _FLAGS["description"],
            _FLAGS["x-privacy-rule"],
        )
    )
    return rows


def markdown_table(rows: list[Row] | None = None) -> str:
    """The README's property table (Markdown), one line per row, event named once."""
    lines = [
        "| event | property | type | meaning | privacy rule |",
        "|---|---|---|---|---|",
    ]
    previous = None
    for row in schema_rows() if rows is None else rows:
        event = (
            ""
            if row.event == previous
            else ("every event" if row.event == ALL_EVENTS else f"`{row.event}`")
        )
        previous = row.event
        cells = (event, f"`{row.path}`", row.json_type, row.meaning, row.rule)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def schema_document(*, as_json: bool = False) -> str:
    """The schema of the shipped events, for ``codeweaver-telemetry schema [--json]``.

    Args:
        as_json: give ``{"schema_version": 1, "events": json_schemas()}`` as indented JSON
            rather than the human text (one block per event: path, type, rule, meaning).

    Returns:
        The document, ending in a newline.
    """
    if as_json:
        return (
            json.dumps(
                {"schema_version": SCHEMA_VERSION, "events": json_schemas()},
                indent=2,
                ensure_ascii=False,
            )
            + "\n"
        )
    rows = schema_rows()
    width = max(len(r.path) for r in rows)
    kind_width = max(len(r.json_type) for r in rows)
    out = [f"Shipped events, schema_version {SCHEMA_VERSION}"]
    previous = None
    for row in rows:
        if row.event != previous:
            title = "Every event also carries" if row.event == ALL_EVENTS else row.event
            out.extend(("", title))
            previous = row.event
        out.append(
            f"  {row.path:<{width}}  {row.json_type:<{kind_width}}  [{row.rule}] {row.meaning}"
        )
    return "\n".join(out) + "\n"
