"""The privacy pipeline's size limits: cut, trim, and drop only what cannot fit."""

from __future__ import annotations

import json
from typing import Any

from codeweaver_telemetry._types import Event
from codeweaver_telemetry.pipeline import (
    MAX_EVENT_BYTES,
    MAX_STRING_CHARS,
    context_stage,
    limits_stage,
)


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
