# SPDX-License-Identifier: MIT OR Apache-2.0
"""Tests for the session statistics and the latency sketch behind their percentiles."""

from __future__ import annotations

import enum
import json
import math
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeweaver_telemetry.events.stats import (
    MAX_BUCKETS,
    MAX_KEY_CHARS,
    MAX_KEYS,
    OTHER_KEY,
    RELATIVE_ACCURACY,
    LatencySketch,
    SessionStatistics,
)

EMPTY_LATENCY = {"avg": None, "min": None, "max": None, "p50": None, "p95": None}


class MyError(Exception):
    """An exception defined outside builtins: its kind carries the module."""


class Intent(str, enum.Enum):
    """A str-valued enum: used as a key by its value."""

    FIND = "find"


class Level(enum.IntEnum):
    """An int-valued enum: used as a key by its name."""

    HIGH = 3


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-quantile: ``sorted(values)[ceil(q * n) - 1]``, rank at least 1."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_close(estimate: float | None, true: float) -> None:
    """``estimate`` is within the sketch's relative accuracy of ``true`` (plus float noise)."""
    assert estimate is not None
    assert abs(estimate - true) <= RELATIVE_ACCURACY * abs(true) * (1 + 1e-9)


def buckets(stats: SessionStatistics) -> list[int]:
    """Bucket counts of every sketch held by ``stats``."""
    sketches = [stats._search_latency, *stats._timings.values()]
    return [sketch.bucket_count for sketch in sketches]


# --- SessionStatistics: what is recorded shows in the snapshot ---------------------------------


def test_empty_statistics() -> None:
    """Fresh statistics: totals 0, latency and success_rate None, empty() True."""
    stats = SessionStatistics()
    assert stats.empty()
    assert stats.counters() == {"requests": 0, "searches": 0, "errors": 0, "failovers": 0}
    assert stats.snapshot() == {
        "setup": {"success": None, "attempts": 0, "error_kinds": {}},
        "requests": {"total": 0, "successful": 0, "failed": 0, "success_rate": None},
        "searches": {"total": 0, "by_intent": {}, "by_strategy": {}, "latency_ms": EMPTY_LATENCY},
        "tokens": {"generated": 0, "delivered": 0, "saved": 0},
        "languages": {},
        "failover": {"count": 0, "seconds": 0.0},
        "usage": {},
        "timings": {},
        "errors": {},
    }


def test_ignored_input_leaves_statistics_empty() -> None:
    """Calls whose input is all dropped record nothing, so empty() stays True."""
    stats = SessionStatistics()
    stats.record_usage(123)  # type: ignore[arg-type]
    stats.record_usage("x", count=0)
    stats.record_tokens(-1, True, 2.5)  # type: ignore[arg-type]
    stats.record_languages([])
    stats.record_timing("t", math.nan)
    stats.record_error(None)  # type: ignore[arg-type]
    stats.record_request(ok="yes")  # type: ignore[arg-type]
    stats.record_setup(success=None)  # type: ignore[arg-type]
    assert stats.empty()


def test_every_record_method_shows_in_snapshot() -> None:
    """Each record_* method is reflected exactly in snapshot() and counters()."""
    stats = SessionStatistics()
    stats.record_request()
    stats.record_request(ok=True, latency_ms=10.0)
    stats.record_request(ok=False, latency_ms=30.0)
    stats.record_search(intent="find", strategies=["dense", "sparse"], latency_ms=100.0)
    stats.record_search(intent=None, strategies="dense", latency_ms=200.0)
    stats.record_search(intent=Intent.FIND)
    stats.record_tokens(generated=100, delivered=40, saved=60)
    stats.record_tokens(generated=1, delivered=2, saved=3)
    stats.record_languages(["python", "rust", "python"])
    stats.record_languages({"python": 3, "go": 2})
    stats.record_languages("rust")
    stats.record_failover(1.2504)
    stats.record_failover(seconds=2.0)
    stats.record_usage("search")
    stats.record_usage("search", count=4)
    stats.record_usage(Level.HIGH, 2)  # type: ignore[arg-type]
    stats.record_timing("index", 50.0)
    stats.record_error("fp1")
    stats.record_error("fp1")
    stats.record_error("fp2")

    assert not stats.empty()
    assert stats.counters() == {"requests": 3, "searches": 3, "errors": 3, "failovers": 2}
    snapshot = stats.snapshot()
    assert snapshot["requests"] == {
        "total": 3,
        "successful": 2,
        "failed": 1,
        "success_rate": 0.6667,
    }
    searches = snapshot["searches"]
    latency = searches.pop("latency_ms")
    assert searches == {
        "total": 3,
        "by_intent": {"find": 2, "unknown": 1},
        "by_strategy": {"dense": 2, "sparse": 1},
    }
    assert set(latency) == {"avg", "min", "max", "p50", "p95"}
    assert (latency["avg"], latency["min"], latency["max"]) == (150.0, 100.0, 200.0)
    assert_close(latency["p50"], 100.0)
    assert_close(latency["p95"], 200.0)
    assert snapshot["tokens"] == {"generated": 101, "delivered": 42, "saved": 63}
    assert snapshot["languages"] == {"python": 5, "rust": 2, "go": 2}
    assert snapshot["failover"] == {"count": 2, "seconds": 3.25}
    assert snapshot["usage"] == {"search": 5, "HIGH": 2}
    assert snapshot["errors"] == {"fp1": 2, "fp2": 1}
    assert snapshot["timings"]["index"] == {
        "count": 1,
        "avg": 50.0,
        "min": 50.0,
        "max": 50.0,
        "p50": 50.0,
        "p95": 50.0,
    }
    request = snapshot["timings"]["request"]
    assert request["count"] == 2
    assert request["avg"] == 20.0
    assert (request["min"], request["max"]) == (10.0, 30.0)
    assert_close(request["p50"], 10.0)
    assert_close(request["p95"], 30.0)
    assert set(snapshot) == {
        "setup",
        "requests",
        "searches",
        "tokens",
        "languages",
        "failover",
        "usage",
        "timings",
        "errors",
    }


def test_bad_optional_parts_are_dropped_not_the_event() -> None:
    """A search, request or setup with bad optional arguments still counts; the rest is dropped."""
    stats = SessionStatistics()
    stats.record_search(intent=42, strategies=None, latency_ms="fast")  # type: ignore[arg-type]
    stats.record_search(intent="find", strategies=Exploding())
    stats.record_search(intent="find", strategies=_half_broken())
    stats.record_request(ok=False, latency_ms=math.inf)
    stats.record_setup(True, attempts=-2, error_kinds=42)  # type: ignore[arg-type]
    snapshot = stats.snapshot()
    assert snapshot["searches"]["total"] == 3
    assert snapshot["searches"]["by_intent"] == {"unknown": 1, "find": 2}
    assert snapshot["searches"]["by_strategy"] == {}
    assert snapshot["searches"]["latency_ms"] == EMPTY_LATENCY
    assert snapshot["requests"]["failed"] == 1
    assert snapshot["timings"] == {}
    assert snapshot["setup"] == {"success": True, "attempts": 0, "error_kinds": {}}


def test_success_rate_is_exact_ratio_rounded() -> None:
    """success_rate is successful / total rounded to 4 places."""
    stats = SessionStatistics()
    for i in range(7):
        stats.record_request(ok=i < 5)
    assert stats.snapshot()["requests"]["success_rate"] == round(5 / 7, 4)


def test_setup_last_success_wins_attempts_add_up_and_kinds_are_type_names() -> None:
    """Setup: last success wins, attempts add up, error kinds are type names, never messages."""
    stats = SessionStatistics()
    stats.record_setup(
        False,
        attempts=2,
        error_kinds=[ValueError("secret /home/me/token"), KeyError, "Timeout", MyError("x")],
    )
    stats.record_setup(False, attempts=1, error_kinds=MyError)  # type: ignore[arg-type]
    stats.record_setup(True, attempts=3, error_kinds=(ValueError(),))
    setup = stats.snapshot()["setup"]
    assert setup == {
        "success": True,
        "attempts": 6,
        "error_kinds": {
            "ValueError": 2,
            "KeyError": 1,
            "Timeout": 1,
            "tests.events.test_stats.MyError": 2,
        },
    }
    assert "secret" not in json.dumps(stats.snapshot())


def test_tokens_ignore_negatives_bools_and_non_integers() -> None:
    """Token counts add only non-negative ints."""
    stats = SessionStatistics()
    stats.record_tokens(generated=10, delivered=-5, saved=True)
    stats.record_tokens(generated=2.5, delivered=3, saved="7")  # type: ignore[arg-type]
    assert stats.snapshot()["tokens"] == {"generated": 10, "delivered": 3, "saved": 0}


def test_failover_counts_even_with_a_bad_duration() -> None:
    """A failover always counts; negative, NaN and bool durations add no seconds."""
    stats = SessionStatistics()
    stats.record_failover(-3.0)
    stats.record_failover(math.nan)
    stats.record_failover(True)
    stats.record_failover(0.0004)
    assert stats.snapshot()["failover"] == {"count": 4, "seconds": 0.0}


def test_languages_mapping_skips_bad_counts() -> None:
    """A mapping adds its positive int counts; bad counts and non-str keys are skipped."""
    stats = SessionStatistics()
    stats.record_languages({"python": 2, "rust": -1, "go": 1.5, 3: 4, "c": True})  # type: ignore[dict-item]
    assert stats.snapshot()["languages"] == {"python": 2}


def test_keys_are_plain_strings_cut_to_max_chars() -> None:
    """Keys become plain str (enum str values, names otherwise) cut to MAX_KEY_CHARS at a
    word boundary: the word the cut would split is dropped whole (it could be half an
    e-mail that the scrubber would no longer recognise)."""

    class Name(str):
        """A str subclass whose __str__ must not be used."""

        def __str__(self) -> str:
            return "overridden"

    stats = SessionStatistics()
    stats.record_usage("x" * 200)
    stats.record_usage("word " * 12 + "alice.smith@example.com")
    stats.record_usage(Name("sub"))
    stats.record_search(intent=Intent.FIND, strategies=[Level.HIGH])  # type: ignore[list-item]
    snapshot = stats.snapshot()
    assert snapshot["usage"] == {"\u2026": 1, ("word " * 12).rstrip() + "\u2026": 1, "sub": 1}
    assert all(len(key) <= MAX_KEY_CHARS for key in snapshot["usage"])
    assert all(type(key) is str for key in snapshot["usage"])
    assert snapshot["searches"]["by_intent"] == {"find": 1}
    assert snapshot["searches"]["by_strategy"] == {"HIGH": 1}


def test_snapshot_is_a_copy() -> None:
    """Mutating a snapshot, however deep, does not change the statistics."""
    stats = SessionStatistics()
    stats.record_search(intent="find", strategies=["dense"], latency_ms=5.0)
    stats.record_usage("u")
    stats.record_timing("t", 1.0)
    stats.record_setup(False, error_kinds=["E"])
    before = stats.snapshot()
    mutated = stats.snapshot()
    mutated["searches"]["by_intent"]["find"] = 99
    mutated["searches"]["latency_ms"]["p50"] = -1
    mutated["usage"].clear()
    mutated["timings"]["t"]["count"] = 0
    mutated["setup"]["error_kinds"]["F"] = 1
    mutated["requests"]["total"] = 7
    assert stats.snapshot() == before


# --- bounds ------------------------------------------------------------------------------------


def test_max_keys_caps_every_map() -> None:
    """1,000 distinct names keep at most MAX_KEYS + 1 keys; "<other>" holds the rest."""
    stats = SessionStatistics()
    for i in range(1000):
        stats.record_usage(f"name-{i}")
        stats.record_error(f"fp-{i}")
        stats.record_languages([f"lang-{i}"])
        stats.record_timing(f"timing-{i}", float(i + 1))
        stats.record_search(intent=f"intent-{i}", strategies=[f"s-{i}"])
    snapshot = stats.snapshot()
    maps = [
        snapshot["usage"],
        snapshot["errors"],
        snapshot["languages"],
        snapshot["searches"]["by_intent"],
        snapshot["searches"]["by_strategy"],
    ]
    for counts in maps:
        assert len(counts) == MAX_KEYS + 1
        assert counts[OTHER_KEY] == 1000 - MAX_KEYS
        assert sum(counts.values()) == 1000
    assert len(snapshot["timings"]) == MAX_KEYS + 1
    assert snapshot["timings"][OTHER_KEY]["count"] == 1000 - MAX_KEYS
    assert snapshot["timings"][OTHER_KEY]["max"] == 1000.0
    assert sum(t["count"] for t in snapshot["timings"].values()) == 1000
    assert stats.counters()["errors"] == 1000


def test_sketch_size_stays_bounded_for_long_sessions() -> None:
    """Many searches and requests with latencies over 21 decades: the sketches stay at or
    under MAX_BUCKETS buckets (bench/bench_events.py measures the bytes)."""
    rng = random.Random(1234)
    stats = SessionStatistics()
    n = 100_000
    latencies = [10 ** rng.uniform(-9, 12) for _ in range(n)]
    for latency in latencies:
        stats.record_search(intent="find", strategies=("dense",), latency_ms=latency)
        stats.record_request(ok=True, latency_ms=latency)
    counts = buckets(stats)
    assert max(counts) == MAX_BUCKETS
    assert stats.counters()["searches"] == n
    snapshot = stats.snapshot()
    assert snapshot["timings"]["request"]["count"] == n
    # The lowest buckets were merged, yet the upper percentile keeps its accuracy.
    assert_close(stats._search_latency.quantile(0.95), nearest_rank(latencies, 0.95))


def test_sketch_merges_lowest_buckets_past_the_limit() -> None:
    """A sketch spanning 1e-300..1e300 keeps MAX_BUCKETS buckets; high quantiles stay accurate."""
    values = [10.0**e for e in range(-300, 301)] * 3
    random.Random(7).shuffle(values)
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)
    assert sketch.bucket_count == MAX_BUCKETS
    assert sketch.count == len(values)
    assert (sketch.min, sketch.max) == (1e-300, 1e300)
    for q in (0.99, 1.0):
        assert_close(sketch.quantile(q), nearest_rank(values, q))
    low = sketch.quantile(0.0)
    assert low is not None
    assert low >= 1e-300  # overestimated, never below the observed range


# --- threads -----------------------------------------------------------------------------------


def test_concurrent_recording_keeps_exact_counts() -> None:
    """8 threads each recording 10,000 requests, searches, usages and timings: counts exact."""
    threads_n, per_thread = 8, 10_000
    stats = SessionStatistics()
    start = threading.Barrier(threads_n)

    def work(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            stats.record_request(ok=i % 2 == 0, latency_ms=float(i % 100 + 1))
            stats.record_search(intent=f"i{t}", strategies=("a", "b"), latency_ms=1.0)
            stats.record_usage("u")
            stats.record_timing("t", 2.0)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    total = threads_n * per_thread
    snapshot = stats.snapshot()
    assert snapshot["requests"] == {
        "total": total,
        "successful": total // 2,
        "failed": total // 2,
        "success_rate": 0.5,
    }
    assert snapshot["searches"]["total"] == total
    assert snapshot["searches"]["by_intent"] == {f"i{t}": per_thread for t in range(threads_n)}
    assert snapshot["searches"]["by_strategy"] == {"a": total, "b": total}
    assert snapshot["usage"] == {"u": total}
    assert snapshot["timings"]["t"]["count"] == total
    assert snapshot["timings"]["request"]["count"] == total
    assert stats._search_latency.count == total


# --- the sketch --------------------------------------------------------------------------------

positive_floats = st.floats(min_value=1e-3, max_value=1e7, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(positive_floats, min_size=1, max_size=400))
def test_sketch_quantiles_within_relative_error(values: list[float]) -> None:
    """Quantiles are within 1% of the nearest-rank sample; count/min/max exact, avg to rounding."""
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)
    for q in (0.0, 0.5, 0.95, 0.99, 1.0):
        assert_close(sketch.quantile(q), nearest_rank(values, q))
    assert sketch.count == len(values)
    assert (sketch.min, sketch.max) == (min(values), max(values))
    summary = sketch.summary()
    assert summary["count"] == len(values)
    assert summary["min"] == round(min(values), 3)
    assert summary["max"] == round(max(values), 3)
    assert summary["avg"] == pytest.approx(round(math.fsum(values) / len(values), 3), abs=1e-3)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6), max_size=100),
    st.lists(positive_floats, max_size=100),
)
def test_merge_equals_adding_everything(first: list[float], second: list[float]) -> None:
    """Merging two sketches answers exactly as one sketch fed every value."""
    a, b, both = LatencySketch(), LatencySketch(), LatencySketch()
    for value in first:
        a.add(value)
        both.add(value)
    for value in second:
        b.add(value)
        both.add(value)
    a.merge(b)
    assert a.count == both.count
    for q in (0.0, 0.25, 0.5, 0.95, 1.0):
        assert a.quantile(q) == both.quantile(q)
    assert (a.min, a.max) == (both.min, both.max)


def test_sketch_zero_bucket_nan_and_empty() -> None:
    """Values <= 0 answer 0.0 (within [min, max]); NaN and infinities are not counted."""
    sketch = LatencySketch()
    assert sketch.quantile(0.5) is None
    assert sketch.summary() == {"count": 0, **EMPTY_LATENCY}
    for value in (math.nan, math.inf, -math.inf, True):
        sketch.add(value)
    assert sketch.count == 0
    for value in (-5.0, 0.0, 0.0, 10.0):
        sketch.add(value)
    assert sketch.count == 4
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(0.0) == 0.0
    assert_close(sketch.quantile(1.0), 10.0)
    negative = LatencySketch()
    negative.add(-2.0)
    assert negative.quantile(0.5) == -2.0  # 0.0 clamped into [min, max]
    with pytest.raises(ValueError, match="between 0 and 1"):
        sketch.quantile(1.5)


def test_self_merge_doubles_counts() -> None:
    """Merging a sketch into itself counts every value twice."""
    sketch = LatencySketch()
    for value in (1.0, 2.0, 3.0):
        sketch.add(value)
    sketch.merge(sketch)
    assert sketch.count == 6
    assert sketch.sum == 12.0


# --- bad input ---------------------------------------------------------------------------------


class Exploding:
    """Every protocol method raises."""

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __str__(self) -> str:
        raise RuntimeError("boom")

    def __float__(self) -> float:
        raise RuntimeError("boom")


def _half_broken() -> Iterator[str]:
    yield "fine"
    raise RuntimeError("boom")


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.lists(st.one_of(st.none(), st.text(), st.integers(), st.floats())),
    st.dictionaries(st.one_of(st.text(), st.integers()), st.one_of(st.integers(), st.floats())),
    st.sampled_from(
        [object(), Exploding(), ValueError("msg"), KeyError, Intent.FIND, Level.HIGH, int, ...]
    ),
    st.builds(_half_broken),
    st.from_type(type),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), anything, anything, anything), max_size=10))
def test_bad_input_never_raises(calls: list[tuple[int, Any, Any, Any]]) -> None:
    """Arbitrary objects fed to every record method never raise; the snapshot stays valid JSON."""
    stats = SessionStatistics()
    for which, x, y, z in calls:
        if which == 0:
            stats.record_request(x, y)
        elif which == 1:
            stats.record_search(intent=x, strategies=y, latency_ms=z)
        elif which == 2:
            stats.record_tokens(x, y, z)
        elif which == 3:
            stats.record_languages(x)
        elif which == 4:
            stats.record_failover(x)
        elif which == 5:
            stats.record_setup(x, y, z)
        elif which == 6:
            stats.record_usage(x, y)
        elif which == 7:
            stats.record_timing(x, y)
        else:
            stats.record_error(x)
    snapshot = stats.snapshot()
    json.dumps(snapshot, allow_nan=False)
    stats.counters()
    stats.empty()
