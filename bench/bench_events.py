"""Shipped-event benchmarks: capture_search_event beside raw posthog, session statistics memory.

Printed, never asserted. Run with ./scripts/bench. The capture figures are ratios
codeweaver_telemetry / raw posthog measured in the same run against the same loopback
receiver (127.0.0.1, nothing leaves the machine); the statistics figures compare with
keeping every latency in a list.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from array import array
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.receiver import PostHogReceiver, make_receiver  # noqa: E402

CALLS = {"parked": 20_000, "running": 10_000}  # timed capture calls per client and mode
WARMUP = 500
QUERY = "how does authentication work in the request handler"
EXECUTION_MS = 125.5
ACTIVITY = 1_000_000  # searches, and requests, recorded into one SessionStatistics


# -- helpers ------------------------------------------------------------------------------------
def percentile(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_each(
    fn: Callable[..., object],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    n: int,
    out: list[int],
) -> None:
    """Append the wall time of each of ``n`` calls ``fn(*args, **kwargs)`` to ``out`` (ns)."""
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        fn(*args, **kwargs)
        out.append(clock() - start)


def loop_ns(fn: Callable[..., object], args: tuple[Any, ...], n: int, repeat: int = 7) -> float:
    """Average ns per call of ``fn(*args)`` in a loop of ``n`` calls; least-disturbed of runs."""
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn(*args)
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def noop(response: object, query: object, intent: object, strategies: object, ms: object) -> None:
    """Takes what capture_search_event is given: the timing floor of the rows."""


def header(title: str, ours: str = "ours", other: str = "posthog") -> None:
    print(f"\n{title}")
    print(f"  {'':<50} {ours:>11} {other:>11} {'':<5} {'ratio':>7}")


def row(label: str, ours: float, other: float, unit: str, digits: int = 1) -> None:
    ratio = ours / other if other else float("nan")
    shown = f"{ratio:.2f}x" if ratio >= 0.01 or ratio <= 0 else f"{ratio:.1e}x"
    print(f"  {label:<50} {ours:>11,.{digits}f} {other:>11,.{digits}f} {unit:<5} {shown:>7}")


def line(label: str, value: str) -> None:
    print(f"  {label:<50} {value}")


# -- 1. capture_search_event on the caller's thread ----------------------------------------------
def make_response() -> Any:
    from codeweaver_telemetry.events.schemas import MatchSummary, SearchResponseSummary

    kinds = ("semantic", "keyword", "hybrid")
    languages = ["python"] * 5 + ["rust"] * 3 + ["typescript"] * 2
    return SearchResponseSummary(
        candidates=50,
        token_count=4210,
        matches=[
            MatchSummary(score=round(0.92 - i * 0.041, 3), match_type=kinds[i % 3])
            for i in range(10)
        ],
        languages=languages,
        status="success",
        warnings=["index is 3% stale"],
        index_state="ready",
        index_coverage=0.97,
    )


def search_args() -> tuple[Any, ...]:
    from codeweaver_telemetry.events.schemas import IntentType, SearchStrategy

    strategies = (SearchStrategy.HYBRID, SearchStrategy.RERANK)
    return (make_response(), QUERY, IntentType.UNDERSTAND, strategies, EXECUTION_MS)


def wire_properties(args: tuple[Any, ...]) -> dict[str, Any]:
    """The search event's properties as serialized for telemetry (what posthog is given)."""
    from codeweaver_telemetry.events.schemas import SearchEvent

    response, query, intent, strategies, elapsed = args
    event = SearchEvent.from_response(
        response,
        query=query,
        intent_type=intent,
        strategies=strategies,
        execution_time_ms=elapsed,
    )
    return event.serialize_for_telemetry()


def capture_round_trip(
    receiver: PostHogReceiver,
    home: str,
    mode: str,
    args: tuple[Any, ...],
    props: dict[str, Any],
) -> tuple[list[int], list[int], str]:
    """Time ``CALLS[mode]`` calls of each client, interleaved in rounds; flush between rounds."""
    import posthog

    from codeweaver_telemetry import TelemetryClient, TelemetrySettings

    parked = mode == "parked"
    # parked: a round stays below one batch and the batch interval is an hour, so neither
    # background thread sends while calls are timed; running: both send every 100 events.
    batch, interval, per_round = (1000, 3600.0, 500) if parked else (100, 5.0, 1000)
    ours = TelemetryClient(
        TelemetrySettings(
            enabled=True,
            posthog_api_key=f"phc_events_{mode}",
            posthog_host=receiver.url,
            state_dir=Path(home) / f"capture-{mode}",
            batch_size=batch,
            batch_interval_seconds=interval,
            max_queue_size=100_000,
        )
    )
    assert ours.enabled, ours.decision
    ours.start_session({"version": "0.5.0"})
    raw = posthog.Client(
        f"phc_raw_{mode}",
        host=receiver.url,
        disable_geoip=True,
        max_queue_size=100_000,
        flush_at=batch,
        flush_interval=interval,
    )
    raw_id = f"bench-raw-{mode}"
    raw_kwargs = {"distinct_id": raw_id, "properties": props}
    raw_args = ("codeweaver_search",)
    ours_s: list[int] = []
    raw_s: list[int] = []
    warm: list[int] = []
    time_each(ours.capture_search_event, args, {}, WARMUP, warm)
    time_each(raw.capture, raw_args, raw_kwargs, WARMUP, warm)
    ours.flush(30)
    raw.flush(30)
    for i in range(CALLS[mode] // per_round):
        first_ours = i % 2 == 0  # alternate who goes first in a round
        for which in (0, 1) if first_ours else (1, 0):
            if which == 0:
                time_each(ours.capture_search_event, args, {}, per_round, ours_s)
            else:
                time_each(raw.capture, raw_args, raw_kwargs, per_round, raw_s)
        ours.flush(30)  # outside the timed region: the queues never come near their bound
        raw.flush(30)
    dropped = sum(ours.stats()["dropped"].values())
    got = receiver.events_named("codeweaver_search")
    ours_got = sum(1 for e in got if e.get("distinct_id") == ours.distinct_id)
    raw_got = sum(1 for e in got if e.get("distinct_id") == raw_id)
    expected = CALLS[mode] + WARMUP
    ours.shutdown(timeout=10)
    raw.shutdown()
    note = (
        f"delivered to the loopback receiver: ours {ours_got:,}/{expected:,} "
        f"(dropped {dropped}), posthog {raw_got:,}/{expected:,}"
    )
    return ours_s, raw_s, note


def time_floor() -> float:
    floor: list[int] = []
    time_each(noop, (1, 2, 3, 4, 5), {}, 20_000, floor)
    return statistics.median(floor)


def bench_capture(receiver: PostHogReceiver, home: str) -> None:
    args = search_args()
    props = wire_properties(args)
    size = len(json.dumps(props, separators=(",", ":")))
    print(
        f"\nposthog is given the finished search event's properties: {len(props)} top-level "
        f"keys, {size} bytes of JSON"
    )
    results = {}
    for mode in ("running", "parked"):
        results[mode] = capture_round_trip(receiver, home, mode, args, props)
    floor = time_floor()
    for mode, title in (
        ("running", "delivery running (both send every 100 events, as in real use)"),
        ("parked", "delivery parked while timed (pure enqueue path)"),
    ):
        ours_s, raw_s, note = results[mode]
        header(
            f"capture_search_event vs posthog capture(), caller's thread, {len(ours_s):,} calls, "
            f"{title}"
        )
        ours_med, raw_med = statistics.median(ours_s) / 1000, statistics.median(raw_s) / 1000
        ours_p99, raw_p99 = percentile(ours_s, 0.99) / 1000, percentile(raw_s, 0.99) / 1000
        row("median", ours_med, raw_med, "us")
        row("p99", ours_p99, raw_p99, "us")
        goal = ours_med / raw_med if raw_med else float("nan")
        verdict = "met" if goal <= 0.3 else "NOT met"
        line("goal: median <= 0.30x posthog", f"{goal:.2f}x -> {verdict}")
        line("queue", "max 100,000, flushed between rounds (untimed): enqueue path")
        line("", note)
    line("timing floor (perf_counter_ns pair + call)", f"{floor / 1000:.3f} us, not subtracted")
    bench_capture_off(receiver, args, props, floor)


def bench_capture_off(
    receiver: PostHogReceiver, args: tuple[Any, ...], props: dict[str, Any], floor: float
) -> None:
    import posthog

    from codeweaver_telemetry import TelemetryClient

    os.environ["DO_NOT_TRACK"] = "1"
    try:
        off = TelemetryClient()
    finally:
        del os.environ["DO_NOT_TRACK"]
    assert not off.enabled, off.decision
    assert off.decision.source != "init", off.decision
    raw_off = posthog.Client("phc_raw_off", host=receiver.url, disabled=True)
    raw_kwargs = {"distinct_id": "bench-raw", "properties": props}
    off_s: list[int] = []
    raw_s: list[int] = []
    time_each(off.capture_search_event, args, {}, WARMUP, [])
    time_each(raw_off.capture, ("codeweaver_search",), raw_kwargs, WARMUP, [])
    time_each(off.capture_search_event, args, {}, CALLS["parked"], off_s)
    time_each(raw_off.capture, ("codeweaver_search",), raw_kwargs, CALLS["parked"], raw_s)
    header("capture_search_event when telemetry is off (DO_NOT_TRACK=1; posthog: disabled=True)")
    row(
        "median, timed per call",
        statistics.median(off_s) / 1000,
        statistics.median(raw_s) / 1000,
        "us",
        3,
    )
    row(
        "p99, timed per call",
        percentile(off_s, 0.99) / 1000,
        percentile(raw_s, 0.99) / 1000,
        "us",
        3,
    )
    # posthog's disabled capture costs tens of us: a shorter loop measures it as well.
    n, raw_n = 100_000, 2_000
    ours_loop = loop_ns(off.capture_search_event, args, n) - loop_ns(noop, args, n)
    raw_call = raw_off.capture

    def raw_off_call(*_: object) -> object:
        return raw_call("codeweaver_search", distinct_id="bench-raw", properties=props)

    raw_loop = loop_ns(raw_off_call, args, raw_n) - loop_ns(noop, args, raw_n)
    row(
        "loop mean, best of 7, empty loop subtracted",
        ours_loop / 1000,
        raw_loop / 1000,
        "us",
        3,
    )
    line("timing floor of the per-call rows", f"{floor / 1000:.3f} us (included in them)")
    line("loop lengths (ours / posthog)", f"{n:,} / {raw_n:,} calls")
    raw_off.shutdown()


# -- 2. and 3. SessionStatistics -----------------------------------------------------------------
def make_activity(n: int, seed: int = 20260523) -> dict[str, list[Any]]:
    from codeweaver_telemetry.events.schemas import IntentType, SearchStrategy

    rng = random.Random(seed)
    intents = [i.value for i in IntentType]  # 7
    names = [s.value for s in SearchStrategy]  # 5
    combos = [tuple(c) for k in (1, 2) for c in itertools.combinations(names, k)]
    lognorm = rng.lognormvariate
    return {
        "intent": [intents[rng.randrange(len(intents))] for _ in range(n)],
        "strategies": [combos[rng.randrange(len(combos))] for _ in range(n)],
        "search_ms": [lognorm(math.log(120.0), 0.9) for _ in range(n)],
        "request_ms": [lognorm(math.log(35.0), 1.3) for _ in range(n)],
        "ok": [rng.random() < 0.97 for _ in range(n)],
    }


def record_all(stats: Any, activity: dict[str, list[Any]]) -> None:
    record_search = stats.record_search
    record_request = stats.record_request
    for intent, strategies, ms in zip(
        activity["intent"], activity["strategies"], activity["search_ms"], strict=True
    ):
        record_search(intent=intent, strategies=strategies, latency_ms=ms)
    for ok, ms in zip(activity["ok"], activity["request_ms"], strict=True):
        record_request(ok, ms)


def retained_bytes(build: Callable[[], object]) -> tuple[int, object]:
    """Bytes allocated by ``build()`` and still held once it returned (its result alive)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = build()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    own = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(own).compare_to(before.filter_traces(own), "filename")
    return sum(s.size_diff for s in diff), kept


def bench_statistics() -> None:
    from codeweaver_telemetry.events.stats import MAX_BUCKETS, SessionStatistics

    n = ACTIVITY
    activity = make_activity(n)

    def recorded() -> SessionStatistics:
        stats = SessionStatistics()
        record_all(stats, activity)
        return stats

    ours, stats = retained_bytes(recorded)
    assert isinstance(stats, SessionStatistics)
    one_list, _ = retained_bytes(lambda: [x * 1.0 for x in activity["search_ms"]])
    one_array, _ = retained_bytes(lambda: array("d", activity["search_ms"]))
    naive_list = 2 * one_list  # every search and every request latency kept
    naive_array = 2 * one_array
    items = 2 * n
    header(
        f"SessionStatistics memory after {n:,} searches + {n:,} requests (tracemalloc, retained)",
        other="naive",
    )
    row(f"bytes vs list[float] of all {items:,} latencies", ours, naive_list, "B", 0)
    row(f"bytes vs array('d') of all {items:,} latencies", ours, naive_array, "B", 0)
    row("bytes per recorded item vs list[float]", ours / items, naive_list / items, "B", 4)
    line(
        f"naive, measured: one list of {n:,} floats",
        f"{one_list:,} B ({one_list / n:.1f} B/float); array('d'): {one_array / n:.1f} B/float",
    )
    search_sketch = stats._search_latency
    request_sketch = stats._timings["request"]
    line(
        "LatencySketch buckets (searches, requests)",
        f"{search_sketch.bucket_count}, {request_sketch.bucket_count} (bound {MAX_BUCKETS})",
    )
    snap = stats.snapshot()
    exact = sorted(activity["search_ms"])
    latency = snap["searches"]["latency_ms"]
    exact_p50, exact_p95 = exact[math.ceil(0.5 * n) - 1], exact[math.ceil(0.95 * n) - 1]
    line(
        "search latency p50 / p95, sketch vs exact (ms)",
        f"{latency['p50']} / {latency['p95']} vs {exact_p50:.3f} / {exact_p95:.3f}",
    )
    del snap, exact

    # Timed on the same object, after the million (tracemalloc is off by now): the steady
    # state of a long session. 200,000 more of each keeps the run short.
    timed_n = 200_000
    search_ns: list[int] = []
    request_ns: list[int] = []
    clock = time.perf_counter_ns
    record_search = stats.record_search
    record_request = stats.record_request
    for intent, strategies, ms in zip(
        activity["intent"][:timed_n],
        activity["strategies"][:timed_n],
        activity["search_ms"][:timed_n],
        strict=True,
    ):
        start = clock()
        record_search(intent=intent, strategies=strategies, latency_ms=ms)
        search_ns.append(clock() - start)
    for ok, ms in zip(activity["ok"][:timed_n], activity["request_ms"][:timed_n], strict=True):
        start = clock()
        record_request(ok, ms)
        request_ns.append(clock() - start)
    snapshot_ns: list[int] = []
    time_each(stats.snapshot, (), {}, 2000, snapshot_ns)
    floor = time_floor()
    print(
        f"\nSessionStatistics timings after those {n:,}, {timed_n:,} more calls each "
        "(no tracemalloc)"
    )
    print(f"  {'':<50} {'median':>11} {'p99':>11}")
    for label, samples, unit, scale in (
        ("record_search(intent, 1-2 strategies, latency)", search_ns, "ns", 1),
        ("record_request(ok, latency)", request_ns, "ns", 1),
        ("snapshot() (2,000 calls)", snapshot_ns, "us", 1000),
    ):
        med, p99 = statistics.median(samples) / scale, percentile(samples, 0.99) / scale
        print(f"  {label:<50} {med:>11,.1f} {p99:>11,.1f} {unit}")
    line("timing floor (perf_counter_ns pair + call)", f"{floor:.0f} ns, not subtracted")


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as home, make_receiver() as receiver:
        for var in ("CI", "DO_NOT_TRACK"):
            os.environ.pop(var, None)
        os.environ["CODEWEAVER_HOME"] = home
        print(f"python {sys.version.split()[0]}, posthog {__import__('posthog').VERSION}")
        bench_capture(receiver, home)
        bench_statistics()
    print(f"\n(ran in {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
