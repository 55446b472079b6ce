"""The HTML report and the dashboard's web API, on a local log of a realistic size.

Printed, never asserted. Run with ./scripts/bench (or this file alone). There is no raw
posthog counterpart (posthog has no local report): the figures are absolute, beside the
core library's import cost with and without the web extra, measured in the same run.

- the log: ``BENCH_WEB_N`` payloads (default 10,000) written by a real client (sessions of
  searches, errors and custom events), on the local log only.
- ``report --html``: time to write the page and its size, for the whole log (the page holds
  the newest 200 payloads) and for an empty log.
- the web API, served by ``start_dashboard()`` on 127.0.0.1 over keep-alive HTTP: median
  and p95 latency of ``GET /api/status``, ``/api/report``, ``/api/payloads?limit=50`` and
  the dashboard page, over ``BENCH_WEB_CALLS`` calls each (default 30).
- import: ``import codeweaver_telemetry`` alone, and with ``codeweaver_telemetry.web``
  (fresh interpreters, median of 7): the extra costs nothing unless imported.

Environment: ``BENCH_WEB_N``, ``BENCH_WEB_CALLS``.
"""

from __future__ import annotations

import http.client
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N = int(os.environ.get("BENCH_WEB_N", "10000"))
CALLS = int(os.environ.get("BENCH_WEB_CALLS", "30"))


def _environment(home: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CODEWEAVER") or name in ("CI", "DO_NOT_TRACK"):
            del os.environ[name]
    os.environ["CODEWEAVER_HOME"] = str(home)
    os.environ["CODEWEAVER__TELEMETRY__ENABLED"] = "true"


def _fill_log(n: int) -> None:
    from codeweaver_telemetry import MatchSummary, SearchResponseSummary, TelemetryClient
    from codeweaver_telemetry.settings import TelemetrySettings

    client = TelemetryClient(TelemetrySettings(enabled=True, max_queue_size=n + 100))
    written = 0
    while written < n:
        client.start_session({"version": "1.0"})
        for i in range(8):
            client.capture_search_event(
                SearchResponseSummary(candidates=40, matches=[MatchSummary(score=0.5)] * 5),
                query="how does the index work",
                execution_time_ms=float(5 + (written * 37 + i * 11) % 900),
            )
        try:
            raise ValueError("bench")
        except ValueError as exc:
            client.capture_error(exc)
        client.capture("custom_step", {"n": written})
        client.record_usage("reindex")
        client.end_session()
        written += 11
    client.flush(60)
    client.shutdown(timeout=10)


def _html(path: Path) -> tuple[float, int]:
    from codeweaver_telemetry.cli import main

    start = time.perf_counter()
    assert main(["report", "--html", str(path)], out=io.StringIO()) == 0
    return time.perf_counter() - start, path.stat().st_size


def _latencies(port: int, token: str, path: str) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    try:
        for _ in range(CALLS):
            start = time.perf_counter()
            conn.request("GET", path, headers={"X-Telemetry-Token": token})
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - start)
            assert response.status == 200, (path, response.status)
    finally:
        conn.close()
    return times


def _import_ms(statement: str) -> float:
    runs = []
    for _ in range(7):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import time; t = time.perf_counter(); {statement}; "
                "print((time.perf_counter() - t) * 1000)",
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        runs.append(float(done.stdout))
    return statistics.median(runs)


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[max(0, -(-95 * len(ordered) // 100) - 1)]
    return f"median {statistics.median(ordered) * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms"


def main() -> None:
    with tempfile.TemporaryDirectory() as temp:
        base = Path(temp)
        _environment(base / "empty")
        empty_s, empty_size = _html(base / "empty.html")
        _environment(base / "home")
        start = time.perf_counter()
        _fill_log(N)
        fill_s = time.perf_counter() - start
        from codeweaver_telemetry.sinks.jsonl import read_log

        directory = base / "home" / "telemetry"
        lines = sum(1 for _ in read_log(directory))
        size = sum(p.stat().st_size for p in directory.glob("events.jsonl*")) / 1024
        print(f"log: {lines:,} payloads, {size:,.0f} KiB (written in {fill_s:.1f} s)")
        full_s, full_size = _html(base / "full.html")
        print(f"report --html, empty log: {empty_size / 1024:6.1f} KiB in {empty_s * 1000:6.1f} ms")
        print(
            f"report --html, {lines:,} payloads (page holds the newest 200): "
            f"{full_size / 1024:6.1f} KiB in {full_s * 1000:6.1f} ms"
        )
        from codeweaver_telemetry.web import start_dashboard

        dashboard = start_dashboard()
        try:
            for path in ("/api/status", "/api/report", "/api/payloads?limit=50", "/"):
                times = _latencies(dashboard.port, dashboard.token, path)
                print(f"GET {path:24} {_ms(times)}  ({CALLS} calls, {lines:,}-payload log)")
        finally:
            dashboard.stop()
    core = _import_ms("import codeweaver_telemetry")
    web = _import_ms("import codeweaver_telemetry, codeweaver_telemetry.web")
    print(f"import codeweaver_telemetry:                 {core:6.1f} ms (median of 7)")
    print(f"import codeweaver_telemetry + .web (extra):  {web:6.1f} ms (only when imported)")


if __name__ == "__main__":
    main()
