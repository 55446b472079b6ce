"""The privacy pipeline's size limits (cut, trim, and drop only what cannot fit), and valid
text: no string in an event can make it fail to encode."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeweaver_telemetry._types import Event, SessionMetadata
from codeweaver_telemetry.pipeline import (
    DEFAULT_STAGES,
    MAX_EVENT_BYTES,
    MAX_ITEMS,
    MAX_STRING_CHARS,
    context_stage,
    library_properties,
    limits_stage,
    run,
)
from codeweaver_telemetry.privacy.hashing import InMemoryKeyProvider


def event(properties: dict[str, Any], **context: Any) -> Event:
    return Event(name="e", properties=properties, timestamp=0.0, uuid="u", context=context)


def size(props: dict[str, Any]) -> int:
    return len(json.dumps(props, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def test_small_events_pass_unchanged() -> None:
    """An event within every limit is not modified."""
    props = {"a": 1, "b": {"c": [1, 2, 3]}, "s": "text"}
    done = limits_stage(event(json.loads(json.dumps(props))))
    assert done is not None
    assert done.properties == props


def test_long_strings_are_cut() -> None:
    """Strings longer than MAX_STRING_CHARS are cut and marked."""
    done = limits_stage(event({"s": "x" * (MAX_STRING_CHARS * 3)}))
    assert done is not None
    assert len(done.properties["s"]) == MAX_STRING_CHARS


def test_an_oversized_map_of_counts_keeps_its_largest_entries() -> None:
    """A too-large event is trimmed, not dropped: a map of counts keeps its largest entries
    and sums the rest under <other>, so its total is preserved."""
    usage = {f"{'feature-' * 18}{i:04d}": i + 1 for i in range(450)}
    metadata = {f"k{i}": "v" * 200 for i in range(40)}
    props: dict[str, Any] = {"usage": usage, "metadata": metadata, "total": 7}
    assert size(props) > MAX_EVENT_BYTES
    done = limits_stage(event(props))
    assert done is not None
    out = done.properties
    assert size(out) <= MAX_EVENT_BYTES
    assert out["total"] == 7
    assert sum(out["usage"].values()) == sum(range(1, 451))
    kept = {k: v for k, v in out["usage"].items() if k != "<other>"}
    assert "<other>" in out["usage"]
    assert min(kept.values()) > max(v for k, v in usage.items() if k not in kept)
    assert out["metadata"] == metadata, "the largest map is trimmed first"


def test_an_event_that_cannot_fit_is_dropped() -> None:
    """Flat properties beyond the byte limit cannot be trimmed: the event is dropped."""
    props = {f"k{i}": "v" * MAX_STRING_CHARS for i in range(80)}
    assert size(props) > MAX_EVENT_BYTES
    assert limits_stage(event(props)) is None


def test_feature_flags_are_scrubbed_and_json_safe() -> None:
    """$feature/ keys and string values pass the scrubber (with a safe cut); NaN, infinite
    and non-scalar values are left out."""
    flags = {
        "exp": "control",
        "alice@example.com": True,
        "ratio": float("nan"),
        "big": float("inf"),
        "obj": object(),
        "n": 3,
        "long": "w " * 20 + "x" * 40 + "bob.jones@example.com",
    }
    done = context_stage(event({}, flags=flags))
    assert done is not None
    features = {k: v for k, v in done.properties.items() if k.startswith("$feature/")}
    assert set(features) == {"$feature/exp", "$feature/<email>", "$feature/n", "$feature/long"}
    assert "bob" not in json.dumps(features)
    json.dumps(done.properties, allow_nan=False)


def test_trimming_keeps_the_shape_of_nested_structures() -> None:
    """Trimming halves the innermost maps, so a structure such as searches keeps every key
    (total, by_intent, by_strategy, latency_ms) while its large maps shrink."""
    label = "\u691c" * 63  # 3 bytes per character in UTF-8
    searches = {
        "total": 400,
        "by_intent": {f"{label}{i:03d}": 2 for i in range(200)},
        "by_strategy": {f"{label}s{i:03d}": 2 for i in range(200)},
        "latency_ms": {"avg": 1.0, "min": 0.5, "max": 2.0, "p50": 1.0, "p95": 1.9},
    }
    props: dict[str, Any] = {"searches": searches}
    assert size(props) > MAX_EVENT_BYTES
    done = limits_stage(event(props))
    assert done is not None
    out = done.properties["searches"]
    assert set(out) == {"total", "by_intent", "by_strategy", "latency_ms"}
    assert out["latency_ms"]["p95"] == 1.9
    assert sum(out["by_intent"].values()) == 400
    assert sum(out["by_strategy"].values()) == 400


# Valid text: a lone surrogate anywhere never costs the event -----------------------------
KEYS = InMemoryKeyProvider(b"p" * 32)


def finished(result: Event | None) -> Event:
    """The event came through, and everything in it encodes as UTF-8 JSON."""
    assert result is not None, "the event was dropped"
    json.dumps(result.properties, ensure_ascii=False).encode("utf-8")
    result.name.encode("utf-8")
    return result


def test_surrogates_in_every_part_of_an_event_become_valid_text() -> None:
    """An unpaired surrogate in the event name, a property key or value, the session
    metadata or a flag becomes U+FFFD, and a surrogate pair its character; the event is
    sent."""
    metadata = SessionMetadata({"meta": "m\ud800"})
    done = finished(
        run(
            Event(
                name="search\udc00",
                properties={"k\udfff": "\ud83d\ude00 ok", "n": 1},
                timestamp=0.0,
                uuid="u",
                context={"metadata": metadata, "flags": {"f\ud800": "v\udbff"}},
            )
        )
    )
    assert done.name == "search\ufffd"
    props = done.properties
    assert props["k\ufffd"] == "\U0001f600 ok"
    assert props["meta"] == "m\ufffd"
    assert props["$feature/f\ufffd"] == "v\ufffd"
    assert props["n"] == 1


def test_session_metadata_with_a_surrogate_costs_no_event() -> None:
    """Session metadata holding a lone surrogate no longer drops every event of the
    session: each event encodes, with the metadata made valid."""
    metadata = SessionMetadata({"repo": {"name": "x\ud800"}})
    for i in range(3):
        done = finished(run(event({"i": i}, metadata=metadata)))
        assert done.properties["repo"] == {"name": "x\ufffd"}


# Arbitrary code points, with unpaired surrogates and surrogate pairs often among them.
any_text = st.lists(
    st.characters(exclude_categories=())
    | st.integers(0xD800, 0xDFFF).map(chr)
    | st.sampled_from(["a", " ", "\ud83d\ude00"]),
    max_size=20,
).map("".join)
nested = st.recursive(
    any_text | st.integers() | st.floats() | st.booleans() | st.none(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(any_text, children),
    max_leaves=15,
)


@settings(max_examples=100, deadline=None)
@given(
    name=any_text,
    properties=st.dictionaries(any_text, nested, max_size=6),
    metadata=st.dictionaries(any_text, nested, max_size=6),
    flags=st.dictionaries(any_text, any_text | st.booleans() | st.integers(), max_size=4),
)
def test_any_code_points_never_drop_an_event(
    name: str, properties: dict[str, Any], metadata: dict[str, Any], flags: dict[str, Any]
) -> None:
    """Text with arbitrary code points, surrogates included, in the event name, property
    keys and values, session metadata and flags: the event is not dropped, and it encodes
    as UTF-8 JSON."""
    result = run(
        Event(
            name="e" + name,
            properties={"p" + k: v for k, v in properties.items()},
            timestamp=0.0,
            uuid="u",
            context={
                "metadata": SessionMetadata(metadata),
                "flags": flags,
                "key_provider": KEYS,
                "session_id": "s",
            },
        )
    )
    finished(result)


def test_an_app_cannot_send_the_exposure_event_itself() -> None:
    """`$feature_flag_called` captured by the app (without the client's context) is dropped
    like every reserved name; the client's own exposure passes, scrubbed."""
    forged = Event("$feature_flag_called", {"$feature_flag": "x"}, 0.0, "u")
    assert run(forged) is None
    own = Event(
        "$feature_flag_called",
        {},
        0.0,
        "u",
        context={"flag_called": ("alice@example.com", "variant for bob@example.com")},
    )
    done = run(own)
    assert done is not None
    props = done.properties
    assert props["$feature_flag"] == "<email>"
    assert props["$feature_flag_response"] == "variant for <email>"
    assert props["$feature/<email>"] == "variant for <email>"


# The default stages skip the size limits only where they would change nothing -----------
# Around each limit: keys (200), strings (1000), and strings cut before scrubbing (2000).
long_text = st.sampled_from([150, 200, 201, 999, 1001, 2500]).map(
    lambda n: ("ab c\u00e9\x01 " * n)[:n]
)
values = st.recursive(
    any_text | long_text | st.integers() | st.floats() | st.booleans() | st.none(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(any_text, children),
    max_leaves=15,
)


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(["search", "$identify", "", "sent by a@b.io"]),
    properties=st.dictionaries(any_text | long_text, values, max_size=6),
    metadata=st.none() | st.dictionaries(any_text, values, max_size=4),
    copies=st.sampled_from([1, 30, 501]),
)
def test_the_default_stages_give_what_each_stage_gives(
    name: str,
    properties: dict[str, Any],
    metadata: dict[str, Any] | None,
    copies: int,
) -> None:
    """run() with DEFAULT_STAGES, which skips limits_stage for an event the serializer
    measured within the limits, gives what the three stages give one after another: the
    same properties, name and drop reason; large and long events included."""
    props = {f"{k}{i}": v for i in range(copies) for k, v in properties.items()}

    def make() -> Event:
        context: dict[str, Any] = {"key_provider": KEYS, "session_id": "s"}
        if metadata is not None:
            context["metadata"] = SessionMetadata(copy.deepcopy(metadata))
        return Event(
            name=name, properties=copy.deepcopy(props), timestamp=0.0, uuid="u", context=context
        )

    fast_drops: list[str] = []
    slow_drops: list[str] = []
    fast = run(make(), on_drop=fast_drops.append)
    slow = run(make(), list(DEFAULT_STAGES), on_drop=slow_drops.append)
    assert fast_drops == slow_drops
    assert (fast is None) == (slow is None)
    if fast is not None and slow is not None:
        assert fast.name == slow.name
        assert json.dumps(fast.properties) == json.dumps(slow.properties)


def test_shared_session_metadata_is_never_trimmed_in_place() -> None:
    """Nested session metadata is shared by every event of the session: trimming an
    oversized event works on its own copy."""
    metadata = SessionMetadata({"repo": {"name": "x", "tags": ["a", "b"]}})
    big: dict[str, Any] = {f"k{i}": "v" * MAX_STRING_CHARS for i in range(60)}
    big["usage"] = {f"feature-{i}": i for i in range(400)}
    for props in (big, {"n": 1}):
        run(event(copy.deepcopy(props), metadata=metadata))
    assert metadata.serialized == {"repo": {"name": "x", "tags": ["a", "b"]}}


@pytest.mark.parametrize(
    ("metadata", "properties"),
    [
        # Each part within the limits, together over MAX_ITEMS entries.
        ({f"m{i}": i for i in range(300)}, {f"p{i}": i for i in range(300)}),
        # Each part's bound within MAX_EVENT_BYTES, together over it (escaped characters).
        ({f"m{i}": "\x01" * 200 for i in range(50)}, {f"p{i}": "\x01" * 200 for i in range(50)}),
    ],
)
def test_metadata_and_properties_are_limited_together(
    metadata: dict[str, Any], properties: dict[str, Any]
) -> None:
    """The limits hold for the session metadata and the properties together, though each
    alone is within them."""
    stages = list(DEFAULT_STAGES)
    fast = run(event(dict(properties), metadata=SessionMetadata(dict(metadata))))
    slow = run(event(dict(properties), metadata=SessionMetadata(dict(metadata))), stages)
    assert (fast is None) == (slow is None)
    if fast is not None and slow is not None:
        assert fast.properties == slow.properties
        assert len(fast.properties) <= MAX_ITEMS + len(library_properties()) + 1
