"""`codeweaver-telemetry report`: the local log summarized, numbers checked against the raw
log lines, with --since/--until, --json in the documented shape and usage errors."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeweaver_telemetry import TelemetryClient
from codeweaver_telemetry.cli import EXIT_BROKEN_PIPE, EXIT_OK, EXIT_USAGE, main
from codeweaver_telemetry.events import MatchSummary, SearchResponseSummary
from codeweaver_telemetry.report import parse_instant, percentile, summarize
from tests.receiver import PostHogReceiver
from tests.test_cli import check_shape

PREFIX = "CODEWEAVER__TELEMETRY__"
API_KEY = "phc_reportTestKey0123456789"


def report_json(*argv: str) -> dict[str, Any]:
    out = io.StringIO()
    assert main(["report", *argv, "--json"], out=out) == EXIT_OK
    return check_shape(json.loads(out.getvalue()), "report")


def report_text(*argv: str) -> str:
    out = io.StringIO()
    assert main(["report", *argv], out=out) == EXIT_OK
    return out.getvalue()


def log_path(home: Path) -> Path:
    return home / "telemetry" / "events.jsonl"


def raw_payloads(home: Path) -> list[dict[str, Any]]:
    """The log's payloads read with json alone (not through read_log or report.py)."""
    payloads = []
    for line in log_path(home).read_text(encoding="utf-8").splitlines():
        payload = json.loads(line)
        payload.pop("seq", None)
        payload.pop("prev", None)
        payloads.append(payload)
    return payloads


def nearest_rank(values: list[float], p: int) -> float | None:
    """The p-th percentile by nearest rank, computed the textbook way (floats)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def expected(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's numbers, computed independently from raw payloads."""
    sessions = [p for p in payloads if p["event"] == "codeweaver_session"]
    searches = [p for p in payloads if p["event"] == "codeweaver_search"]
    errors = [p for p in payloads if p["event"] == "codeweaver_error"]
    durations = [
        s["properties"]["duration_seconds"]
        for s in sessions
        if s["properties"].get("duration_seconds") is not None
    ]
    latencies = [
        s["properties"]["execution_time_ms"]
        for s in searches
        if s["properties"].get("execution_time_ms") is not None
    ]
    usage: Counter[str] = Counter()
    for s in sessions:
        usage.update(s["properties"].get("usage") or {})
    flags: dict[str, Counter[str]] = {}
    for p in payloads:
        for key, value in p["properties"].items():
            if key.startswith("$feature/"):
                shown = json.dumps(value) if isinstance(value, bool) else value
                flags.setdefault(key[len("$feature/") :], Counter())[shown] += 1
    return {
        "payloads": len(payloads),
        "bytes": sum(
            len(json.dumps(p, ensure_ascii=False, separators=(",", ":")).encode()) for p in payloads
        ),
        "events": dict(Counter(p["event"] for p in payloads)),
        "days": dict(Counter(p["timestamp"][:10] for p in payloads)),
        "sessions": len(sessions),
        "durations": durations,
        "latencies": latencies,
        "errors": Counter(e["properties"]["fingerprint"] for e in errors),
        "usage": dict(usage),
        "flags": {k: dict(v) for k, v in flags.items()},
    }


class Boom(Exception):
    pass


def fail_here(kind: type[Exception]) -> None:
    raise kind("broken")


def run_sessions(client: TelemetryClient) -> None:
    """Three sessions with searches (with flags), errors, usage and custom events."""
    for n, latencies in enumerate(([12.5, 80.0, 40.25], [300.0], [5.0, 7.5, 9.0, 1000.0])):
        client.start_session({"version": "1.0"})
        for i, ms in enumerate(latencies):
            client.capture_search_event(
                SearchResponseSummary(candidates=10, matches=[MatchSummary(score=0.5)]),
                query="how does it work",
                execution_time_ms=ms,
                feature_flags={"reranker": "test" if i % 2 else "control", "beta": n == 1},
            )
        client.record_usage("reindex", n + 1)
        client.record_usage("export")
        for kind in (Boom, ValueError, Boom)[: n + 1]:
            try:
                fail_here(kind)
            except Exception as exc:
                client.capture_error(exc, handled=kind is not ValueError)
        client.capture("custom_step", {"n": n})
        if n == 2:
            client.capture_session_event(duration_seconds=12.5)
        else:
            client.end_session()


def test_report_numbers_match_the_raw_log(
    clean_env: Path, make_client: Callable[..., TelemetryClient]
) -> None:
    """A real client's sessions on the local log: every number of `report --json` equals
    what the raw log lines say, and the text says the same."""
    client = make_client()
    run_sessions(client)
    assert client.flush(10)
    client.shutdown(timeout=5)
    raw = raw_payloads(clean_env)
    want = expected(raw)
    assert want["sessions"] == 3
    assert want["errors"]
    assert want["usage"]
    assert want["flags"]
    got = report_json()
    assert got["log_file"] == str(log_path(clean_env))
    assert (got["since"], got["until"]) == (None, None)
    assert got["percentile_method"] == "nearest-rank"
    assert got["payloads"] == want["payloads"] == len(raw)
    assert got["bytes"] == want["bytes"]
    assert got["events"] == want["events"]
    assert got["days"] == want["days"]
    assert got["sessions"]["count"] == want["sessions"]
    assert got["sessions"]["session_ids"] == 3
    durations = got["sessions"]["duration_seconds"]
    assert durations["count"] == len(want["durations"]) == 3
    assert durations["total"] == pytest.approx(sum(want["durations"]))
    assert durations["max"] == max(want["durations"]) == 12.5
    assert durations["p50"] == nearest_rank(want["durations"], 50)
    assert durations["p95"] == nearest_rank(want["durations"], 95)
    latency = got["search_latency_ms"]
    assert sorted(want["latencies"]) == [5.0, 7.5, 9.0, 12.5, 40.25, 80.0, 300.0, 1000.0]
    assert latency["count"] == 8
    assert (latency["p50"], latency["p95"]) == (12.5, 1000.0)
    assert latency["min"] == 5.0
    assert latency["max"] == 1000.0
    assert latency["total"] == pytest.approx(sum(want["latencies"]))
    bounds = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, None]
    per_bucket = [0] * len(bounds)
    for ms in want["latencies"]:  # the first bucket whose bound is >= the latency
        per_bucket[next(i for i, b in enumerate(bounds) if b is None or ms <= b)] += 1
    assert got["latency_histogram"] == [
        {"le": b, "count": n} for b, n in zip(bounds, per_bucket, strict=True)
    ]
    assert per_bucket[bounds.index(5)] == 1  # 5.0 is in the bucket it bounds
    assert per_bucket[bounds.index(10)] == 2  # 7.5 and 9.0
    assert per_bucket[bounds.index(1000)] == 1  # 1000.0 is in the bucket it bounds
    assert {e["fingerprint"]: e["count"] for e in got["errors"]} == dict(want["errors"])
    assert [e["count"] for e in got["errors"]] == sorted(want["errors"].values(), reverse=True)
    by_type = {e["type"]: e for e in got["errors"]}
    assert by_type["ValueError"]["unhandled"] == by_type["ValueError"]["count"] == 2
    assert by_type["tests.test_report.Boom"]["unhandled"] == 0
    assert got["usage"] == want["usage"] == {"reindex": 6, "export": 3}
    assert got["flags"] == want["flags"]
    assert got["flags"]["reranker"] == {"control": 5, "test": 3}
    assert got["flag_exposures"] == {}  # no flag was read: only passed to the searches
    assert (got["deny_events"], got["deny_properties"]) == ([], [])
    assert got["spooled"] == 0
    assert got["dropped"] is None
    text = report_text()
    assert f"payloads: {len(raw)} ({want['bytes']} bytes" in text
    assert "p50 12.5, p95 1000, max 1000 (nearest-rank percentiles)" in text
    assert "Sessions: 3 session events, 3 session ids" in text
    for fingerprint, count in want["errors"].items():
        assert f"{fingerprint}  " in text
        assert f"  {count}" in text
    assert "reranker  control: 5, test: 3" in text
    assert "dropped: not known here" in text


def test_flag_exposures_come_from_feature_flag_called(
    clean_env: Path,
    make_client: Callable[..., TelemetryClient],
    receiver: PostHogReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With PostHog (the log records what it accepted), flags read by the app show as
    exposures ($feature_flag_called) and on the session's events ($feature/<key>)."""
    receiver.set_flags({"exp": "variant_b", "beta": True})
    client = make_client(posthog_api_key=API_KEY, posthog_host=receiver.url)
    client.start_session()
    assert client.get_feature_flag("exp", default="control") == "variant_b"
    assert client.get_feature_flag("beta", default=False) is True
    client.capture("after_flags")
    client.end_session()
    assert client.flush(10)
    client.shutdown(timeout=5)
    raw = raw_payloads(clean_env)
    monkeypatch.setenv(PREFIX + "POSTHOG_API_KEY", API_KEY)
    monkeypatch.setenv(PREFIX + "POSTHOG_HOST", receiver.url)
    got = report_json()
    assert got["payloads"] == len(raw)
    assert got["flag_exposures"] == {"beta": {"true": 1}, "exp": {"variant_b": 1}}
    assert got["flags"] == expected(raw)["flags"]
    assert got["flags"]["exp"]["variant_b"] >= 2  # the exposure and the later events


def write_log(home: Path, payloads: list[dict[str, Any]], *, chained: bool = False) -> None:
    path = log_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, payload in enumerate(payloads):
        line = dict(payload)
        if chained:
            line.update(seq=i + 1, prev="0" * 64)
        lines.append(json.dumps(line))
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def payload(event: str, timestamp: str, **properties: Any) -> dict[str, Any]:
    return {
        "event": event,
        "distinct_id": "install-1",
        "timestamp": timestamp,
        "uuid": f"u-{event}-{timestamp}",
        "properties": properties,
    }


DAY_LOG = [
    payload("codeweaver_search", "2026-11-30T23:59:59.999999+00:00", execution_time_ms=10.0),
    payload("codeweaver_search", "2026-12-01T00:00:00+00:00", execution_time_ms=20.0),
    payload("codeweaver_session", "2026-12-01T12:00:00+00:00", duration_seconds=3.0),
    payload("codeweaver_search", "2026-12-02T00:00:00+00:00", execution_time_ms=30.0),
    payload("codeweaver_error", "2026-12-02T08:00:00+00:00", fingerprint="ab", type="E"),
]


def test_since_is_inclusive_and_until_exclusive(clean_env: Path) -> None:
    """--since keeps payloads at or after it, --until those before it; a date is its UTC
    midnight, a time without an offset is UTC, and an offset is honoured."""
    write_log(clean_env, DAY_LOG)
    assert report_json()["payloads"] == 5
    day = report_json("--since", "2026-12-01", "--until", "2026-12-02")
    assert (day["since"], day["until"]) == (
        "2026-12-01T00:00:00+00:00",
        "2026-12-02T00:00:00+00:00",
    )
    assert day["events"] == {"codeweaver_search": 1, "codeweaver_session": 1}
    assert day["days"] == {"2026-12-01": 2}
    assert day["search_latency_ms"]["p50"] == 20.0
    assert report_json("--since", "2026-12-02T00:00:00")["payloads"] == 2
    assert report_json("--since", "2026-12-02T00:00:00Z")["payloads"] == 2
    assert report_json("--until", "2026-12-01T01:00:00+01:00")["payloads"] == 1
    assert report_json("--since", "2026-12-03")["payloads"] == 0
    assert "from 2026-12-01T00:00:00+00:00 until now" in report_text("--since", "2026-12-01")


def test_an_empty_or_missing_log_reports_zeros(clean_env: Path) -> None:
    """No log at all, or an empty one: zeros, nulls and empty maps, exit 0."""
    for _ in range(2):
        got = report_json()
        assert (got["payloads"], got["bytes"], got["events"], got["days"]) == (0, 0, {}, {})
        assert got["sessions"]["count"] == 0
        assert got["search_latency_ms"] == {
            "count": 0,
            "total": 0.0,
            "min": None,
            "p50": None,
            "p95": None,
            "max": None,
        }
        assert got["errors"] == []
        assert "payloads: 0 (0 bytes" in report_text()
        write_log(clean_env, [])


def test_chained_and_older_lines_report_the_same(clean_env: Path) -> None:
    """Lines with the chain's seq/prev and older lines without them count the same, and
    the chain's fields are not counted in the bytes; broken lines are skipped."""
    write_log(clean_env, DAY_LOG, chained=True)
    chained = report_json()
    write_log(clean_env, DAY_LOG)
    with log_path(clean_env).open("a", encoding="utf-8") as f:
        f.write('{"event": "cut off\n')
    unchained = report_json()
    assert chained == unchained
    assert chained["bytes"] == sum(
        len(json.dumps(p, separators=(",", ":")).encode()) for p in DAY_LOG
    )


def test_deny_lists_and_spooled_events_are_reported(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is not in the log: the deny lists in effect, and the events waiting in the
    spool (counted, not claimed: the files stay)."""
    monkeypatch.setenv(PREFIX + "DENY_EVENTS", "secret_event,debug_*")
    monkeypatch.setenv(PREFIX + "DENY_PROPERTIES", "repo.path")
    spool = clean_env / "telemetry" / "spool"
    spool.mkdir(parents=True)
    segment = spool / "spool-local-1-2-abcd-3.jsonl.gz"
    segment.write_bytes(gzip.compress(b'{"event":"a"}\n{"event":"b"}\n{"event":"c"}\n'))
    (spool / "spool-local-2-3-abcd-1.jsonl").write_text('{"event":"d"}\n', encoding="utf-8")
    (spool / ".spool-local-tmp").write_text('{"event":"e"}\n', encoding="utf-8")
    got = report_json()
    assert got["deny_events"] == ["secret_event", "debug_*"]
    assert got["deny_properties"] == ["repo.path"]
    assert got["spooled"] == 4
    assert segment.exists()
    text = report_text()
    assert "denied events:     secret_event, debug_*" in text
    assert "spooled, not sent yet: 4 events" in text


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "", "2026-12-01T25:00"])
@pytest.mark.parametrize("option", ["--since", "--until"])
def test_a_bad_date_is_a_usage_error(
    clean_env: Path, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --since/--until that is no ISO 8601 date or date-time exits 2 (with --json too)."""
    for argv in (["report", option, value], ["--json", "report", option, value]):
        with pytest.raises(SystemExit) as exited:
            main(argv, out=io.StringIO())
        assert exited.value.code == EXIT_USAGE
        assert "ISO 8601" in capsys.readouterr().err


def test_a_closed_stdout_ends_report_quietly(clean_env: Path) -> None:
    """`codeweaver-telemetry report | head` with the reader gone: exit 141, nothing on stderr."""
    write_log(clean_env, DAY_LOG)
    for command in (["report"], ["report", "--json"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "codeweaver_telemetry.cli", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(30) == EXIT_BROKEN_PIPE, err
        assert err == ""


def test_percentiles_are_nearest_rank() -> None:
    """p-th percentile = the value at rank ceil(p * n / 100): one of the values."""
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 21)], 95) == 19.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0
    with pytest.raises(ValueError, match="percentile must be"):
        percentile([1.0], 0)


def test_parse_instant_reads_dates_and_date_times() -> None:
    """A date is UTC midnight; no offset means UTC; an offset is converted to UTC."""
    utc = dt.timezone.utc
    assert parse_instant("2026-12-01") == dt.datetime(2026, 12, 1, tzinfo=utc)
    assert parse_instant("2026-12-01T09:30") == dt.datetime(2026, 12, 1, 9, 30, tzinfo=utc)
    assert parse_instant("2026-12-01T09:30:00-02:00") == dt.datetime(
        2026, 12, 1, 11, 30, tzinfo=utc
    )


_names = st.sampled_from(
    ["codeweaver_session", "codeweaver_search", "codeweaver_error", "$feature_flag_called", "x"]
)
_numbers = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
)
_timestamps = st.one_of(
    st.datetimes(
        min_value=dt.datetime(1990, 1, 1),
        max_value=dt.datetime(2090, 1, 1),
        timezones=st.just(dt.timezone.utc),
    ).map(lambda d: d.isoformat()),
    st.text(max_size=5),
    st.none(),
)
_payloads = st.builds(
    lambda name, ts, number, fp, flag, usage: {
        "event": name,
        "distinct_id": "i",
        "timestamp": ts,
        "uuid": "u",
        "properties": {
            "duration_seconds": number,
            "execution_time_ms": number,
            "fingerprint": fp,
            "$feature/f": flag,
            "$feature_flag": "f",
            "$feature_flag_response": flag,
            "usage": usage,
        },
    },
    _names,
    _timestamps,
    _numbers,
    st.sampled_from(["a", "b", None]),
    st.one_of(st.booleans(), st.sampled_from(["x", "y"])),
    st.dictionaries(st.sampled_from(["u", "v"]), st.integers(0, 100), max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_payloads, max_size=30))
def test_report_totals_are_consistent(payloads: list[dict[str, Any]]) -> None:
    """For any payloads: per-name and per-day counts sum to the total, error groups sum
    to the error events, flag values to the payloads, and percentiles lie within min/max."""
    report = summarize(payloads)
    assert report.payloads == len(payloads)
    assert sum(report.events.values()) == report.payloads
    assert sum(report.days.values()) == report.payloads
    errors = sum(1 for p in payloads if p["event"] == "codeweaver_error")
    assert sum(g.count for g in report.errors) == errors
    assert sum(report.flags.get("f", {}).values()) == len(payloads)
    assert report.bytes == sum(
        len(json.dumps(p, separators=(",", ":"), ensure_ascii=False).encode()) for p in payloads
    )
    for summary in (report.session_duration_seconds, report.search_latency_ms):
        if summary.count == 0:
            assert summary.p50 is summary.p95 is summary.min is summary.max is None
            continue
        assert summary.min is not None
        assert summary.max is not None
        assert summary.p50 is not None
        assert summary.p95 is not None
        assert summary.min <= summary.p50 <= summary.p95 <= summary.max
    cut = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    before, after = summarize(payloads, until=cut), summarize(payloads, since=cut)
    dated = report.payloads - report.days.get("unknown", 0)
    assert before.payloads + after.payloads == dated
    json.dumps(report.to_json(), allow_nan=False)
