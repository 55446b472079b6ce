"""Delivery benchmarks beside the raw posthog client, same run, same loopback receiver.

Printed, never asserted. Run with ./scripts/bench (or this file alone). Each figure is
measured for codeweaver_telemetry and for raw posthog in the same run; ratios are
ours / posthog, and every figure is taken ``RUNS`` times and shown as a range.

The receiver runs in its own process (``--serve``): a minimal PostHog ``/batch/`` endpoint
that answers 200 and counts distinct event uuids, so neither side pays for it and a
million events cost it no more than a set of uuids. Clients run in fresh interpreters.

- burst: 50,000 captures in a tight loop on a healthy host: events that arrived (distinct
  uuids) and the time from the first capture to the last arrival.
- outage: ``OUTAGE_N`` captures (default 1,000,000) with the host down (connection
  refused), then a new process on a healthy host: events delivered, the first process's
  peak RSS and time, the disk the spool used, and the WARNING lines both processes wrote.
- worker: 20,000 captures with a queue that holds them all: CPU time of the background
  thread per delivered event, and delivered events per second.

Environment: ``BENCH_RUNS`` (default 3), ``BENCH_OUTAGE_N`` (default 1000000).
"""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
T = TypeVar("T")

from bench.bench_hardening import env_for  # noqa: E402  (the same child environment)

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
OUTAGE_N = int(os.environ.get("BENCH_OUTAGE_N", "1000000"))
BURST_N = 50_000
WORKER_N = 20_000

PROPS = (
    '{"intent": "understand", "strategies": ["hybrid", "rerank"], "execution_time_ms": 125.5,'
    ' "results": {"candidates": 50, "returned": 10, "token_count": 4210},'
    ' "languages": {"python": 6, "rust": 4}, "status": "ok"}'
)


# -- the receiver (its own process) --------------------------------------------------------------
class _Counter(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as PostHog's hosts
    seen: ClassVar[set[str]] = set()
    last_at = 0.0
    requests = 0
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        cls = type(self)
        if self.path == "/reset":
            with cls.lock:
                cls.seen = set()
                cls.last_at = 0.0
                cls.requests = 0
        with cls.lock:
            body = json.dumps(
                {"count": len(cls.seen), "last_at": cls.last_at, "requests": cls.requests}
            ).encode()
        self._reply(body)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip" or raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        body = json.loads(raw)
        batch = body.get("batch", []) if isinstance(body, dict) else []
        now = time.time()
        cls = type(self)
        with cls.lock:
            cls.requests += 1
            before = len(cls.seen)
            cls.seen.update(str(e.get("uuid") or id(e)) for e in batch)
            if len(cls.seen) > before:
                cls.last_at = now
        self._reply(b'{"status": "Ok"}')


def serve(port: int) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Counter)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def state(self, reset: bool = False) -> dict[str, Any]:
        url = self.url + ("/reset" if reset else "/count")  # our own loopback receiver
        with urllib.request.urlopen(url) as answer:  # noqa: S310
            state: dict[str, Any] = json.loads(answer.read())
            return state

    def wait_quiet(self, want: int, quiet_s: float = 3.0, cap_s: float = 600.0) -> dict[str, Any]:
        """Wait until ``want`` events arrived, or none arrived for ``quiet_s``."""
        start = time.monotonic()
        last, since = -1, time.monotonic()
        while time.monotonic() - start < cap_s:
            state = self.state()
            if state["count"] >= want:
                return state
            if state["count"] != last:
                last, since = state["count"], time.monotonic()
            elif time.monotonic() - since > quiet_s:
                return state
            time.sleep(0.05)
        return self.state()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there now: connection refused


# -- the clients (fresh interpreters) -----------------------------------------------------------
PRELUDE = f"""
import json, logging, os, resource, sys, threading, time
logging.basicConfig(level=logging.WARNING)  # an app that shows warnings: count them
PROPS = json.loads({PROPS!r})
N = int(sys.argv[2])
URL = sys.argv[1]

def thread_cpu_s(thread):
    with open(f"/proc/self/task/{{thread.native_id}}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def peak_rss_mb():
    # VmHWM: this process's own peak (ru_maxrss can carry the forking parent's across exec)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def report(**figures):
    figures["rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(figures), flush=True)
"""

OURS = (
    PRELUDE
    + """
from codeweaver_telemetry import get_telemetry_client
client = get_telemetry_client()
assert client.enabled, client.state
mode = sys.argv[3]
start = time.time()
for i in range(N):
    client.capture("search", dict(PROPS, execution_time_ms=i % 997 * 0.5))
caller_s = time.time() - start
if mode == "wait":  # stay until the receiver has them all (the parent decides)
    client.flush(60)
    sys.stdin.readline()
report(start=start, caller_s=caller_s, stats=client.stats())
"""
)

RAW = (
    PRELUDE
    + """
import logging, posthog
client = posthog.Client("phc_bench", host=URL, disable_geoip=True)
mode = sys.argv[3]
start = time.time()
for i in range(N):
    props = dict(PROPS, execution_time_ms=i % 997 * 0.5)
    client.capture("search", distinct_id="bench", properties=props)
caller_s = time.time() - start
if mode == "wait":
    client.flush()
    sys.stdin.readline()
report(start=start, caller_s=caller_s)
"""
)

WORKER_OURS = (
    PRELUDE
    + """
from codeweaver_telemetry import get_telemetry_client
client = get_telemetry_client()
client.capture("warm_up", PROPS)
client.flush(30)  # the thread's start (its imports) is measured apart
threads = [t for t in threading.enumerate() if t.name == "codeweaver-telemetry"]
warm_cpu_s = sum(thread_cpu_s(t) for t in threads)
start = time.time()
for i in range(N):
    client.capture("search", dict(PROPS, execution_time_ms=i % 997 * 0.5))
caller_s = time.time() - start
client.flush(120)
sys.stdin.readline()
report(start=start, caller_s=caller_s, warm_cpu_s=warm_cpu_s,
       worker_cpu_s=sum(thread_cpu_s(t) for t in threads) - warm_cpu_s)
"""
)

WORKER_RAW = (
    PRELUDE
    + """
import posthog
client = posthog.Client("phc_bench", host=URL, disable_geoip=True, max_queue_size=N + 10)
client.capture("warm_up", distinct_id="bench", properties=PROPS)
client.flush()
warm_cpu_s = sum(thread_cpu_s(t) for t in client.consumers or [])
start = time.time()
for i in range(N):
    props = dict(PROPS, execution_time_ms=i % 997 * 0.5)
    client.capture("search", distinct_id="bench", properties=props)
caller_s = time.time() - start
client.flush()
sys.stdin.readline()
report(start=start, caller_s=caller_s, warm_cpu_s=warm_cpu_s,
       worker_cpu_s=sum(thread_cpu_s(t) for t in client.consumers or []) - warm_cpu_s)
"""
)


class Child:
    """A client in a fresh interpreter; ``release()`` lets it exit."""

    def __init__(self, code: str, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def release(self) -> tuple[dict[str, Any], str]:
        out, err = self.proc.communicate("\n", timeout=900)
        for line in out.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[7:])
                return result, err
        raise RuntimeError(f"the child failed:\n{out}\n{err[-3000:]}")


def warning_lines(stderr: str) -> int:
    return sum(1 for line in stderr.splitlines() if line.startswith("WARNING:"))


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fmt_range(values: list[float], digits: int = 0) -> str:
    low, high = min(values), max(values)
    if f"{low:,.{digits}f}" == f"{high:,.{digits}f}":
        return f"{low:,.{digits}f}"
    return f"{low:,.{digits}f}-{high:,.{digits}f}"


def row(label: str, ours: list[float], raw: list[float], unit: str, digits: int = 0) -> None:
    ratios = [o / r for o, r in zip(ours, raw, strict=True) if r]
    ratio = fmt_range(ratios, 2) + "x" if ratios else "-"
    print(
        f"  {label:<40} {fmt_range(ours, digits):>17} {fmt_range(raw, digits):>17}"
        f" {unit:<6} {ratio:>12}"
    )


def header(title: str) -> None:
    print(f"\n{title}")
    print(f"  {'':<40} {'ours':>17} {'posthog':>17} {'':<6} {'ratio':>12}")


# -- the benchmarks -----------------------------------------------------------------------------
def burst_once(receiver: Receiver, code: str, home: str) -> tuple[int, float, float]:
    receiver.state(reset=True)
    child = Child(code, [receiver.url, str(BURST_N), "wait"], env_for(Path(home), receiver.url))
    state = receiver.wait_quiet(BURST_N, quiet_s=5.0)
    result, _ = child.release()
    took = max(0.0, state["last_at"] - result["start"]) if state["count"] else float("nan")
    return state["count"], took, result["caller_s"]


def side_by_side(
    once: Callable[[str, str], T], ours_code: str, raw_code: str, runs: int
) -> tuple[list[T], list[T]]:
    """``once(code, home)`` for our client and for raw posthog, ``runs`` times each, taking
    turns, each in a fresh home directory."""
    ours: list[T] = []
    raw: list[T] = []
    for _ in range(runs):
        for code, results in ((ours_code, ours), (raw_code, raw)):
            with tempfile.TemporaryDirectory() as home:
                results.append(once(code, home))
    return ours, raw


def bench_burst(receiver: Receiver) -> None:
    ours, raw = side_by_side(functools.partial(burst_once, receiver), OURS, RAW, RUNS)
    header(f"burst: {BURST_N:,} captures in a tight loop, healthy host ({RUNS} runs)")
    row("events that arrived", [o[0] for o in ours], [r[0] for r in raw], "events")
    row("first capture to last arrival", [o[1] for o in ours], [r[1] for r in raw], "s", 2)
    row("caller time for the loop", [o[2] for o in ours], [r[2] for r in raw], "s", 2)


def outage_once(code: str, home: str) -> dict[str, float]:
    """The host is down (nothing listens on its port) for the first process; the next
    process finds it up, at the same address (spooled events go only where they were
    meant to)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = Child(code, [url, str(OUTAGE_N), "exit"], env_for(Path(home), url))
    started = time.monotonic()
    result, err1 = first.release()
    first_s = time.monotonic() - started
    spool = Path(home) / "telemetry" / "spool"
    disk = dir_bytes(spool) if spool.exists() else 0
    receiver = Receiver(port)
    try:
        second = Child(code, [url, "0", "wait"], env_for(Path(home), url))
        state = receiver.wait_quiet(OUTAGE_N, quiet_s=5.0, cap_s=900)
        _, err2 = second.release()
    finally:
        receiver.stop()
    return {
        "delivered": state["count"],
        "first_s": first_s,
        "rss_mb": result["rss_mb"],
        "disk_mb": disk / 2**20,
        "warnings": warning_lines(err1) + warning_lines(err2),
    }


def bench_outage() -> None:
    runs = max(1, min(RUNS, 2))
    ours, raw = side_by_side(outage_once, OURS, RAW, runs)
    header(
        f"outage: {OUTAGE_N:,} captures with the host down, then a new process on a healthy"
        f" host ({runs} runs)"
    )
    for key, label, unit, digits in (
        ("delivered", "events delivered by the next process", "events", 0),
        ("first_s", "first process: capture loop and exit", "s", 1),
        ("rss_mb", "first process: peak RSS", "MiB", 0),
        ("disk_mb", "disk used by the spool", "MiB", 1),
        ("warnings", "WARNING lines (both processes)", "lines", 0),
    ):
        row(label, [o[key] for o in ours], [r[key] for r in raw], unit, digits)


def worker_once(receiver: Receiver, code: str, home: str) -> tuple[float, float, float]:
    receiver.state(reset=True)
    child = Child(
        code,
        [receiver.url, str(WORKER_N), "wait"],
        env_for(Path(home), receiver.url, CODEWEAVER__TELEMETRY__MAX_QUEUE_SIZE=str(WORKER_N + 10)),
    )
    state = receiver.wait_quiet(WORKER_N + 1, quiet_s=5.0)
    result, _ = child.release()
    delivered = max(1, state["count"] - 1)
    took = max(1e-9, state["last_at"] - result["start"])
    return result["worker_cpu_s"] / delivered * 1e6, delivered / took, result["warm_cpu_s"] * 1e3


def bench_worker(receiver: Receiver) -> None:
    once = functools.partial(worker_once, receiver)
    ours, raw = side_by_side(once, WORKER_OURS, WORKER_RAW, RUNS)
    header(f"worker: {WORKER_N:,} captures, a queue that holds them all ({RUNS} runs)")
    row("background thread CPU per event", [o[0] for o in ours], [r[0] for r in raw], "us", 1)
    row("delivered events per second", [o[1] for o in ours], [r[1] for r in raw], "ev/s")
    row("thread start and first event (CPU)", [o[2] for o in ours], [r[2] for r in raw], "ms")


def main() -> None:
    import posthog

    version = getattr(posthog, "VERSION", "?")
    print(f"python {sys.version.split()[0]}, posthog {version}, {os.cpu_count()} CPUs")
    receiver = Receiver()
    try:
        which = sys.argv[1:] or ["burst", "worker", "outage"]
        if "burst" in which:
            bench_burst(receiver)
        if "worker" in which:
            bench_worker(receiver)
        if "outage" in which:
            bench_outage()
    finally:
        receiver.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
    else:
        main()
