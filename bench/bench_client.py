"""Client benchmarks beside the raw posthog client, same run, same loopback receiver.

Printed, never asserted. Run with ./scripts/bench. Every figure is a ratio
codeweaver_telemetry / raw posthog (lower is better for us).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.receiver import PostHogReceiver, make_receiver  # noqa: E402

PROPS = {
    "intent": "understand",
    "strategies": ["hybrid", "rerank"],
    "execution_time_ms": 125.5,
    "results": {"candidates": 50, "returned": 10, "token_count": 4210},
    "languages": {"python": 6, "rust": 4},
    "status": "ok",
}


def clean_env(home: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CODEWEAVER") and k not in ("CI", "DO_NOT_TRACK")
    }
    env.update({"CODEWEAVER_HOME": home, "PYTHONPATH": str(ROOT)}, **extra)
    # Bytecode as an installed package has it (pip compiles it at install). A checkout run
    # with PYTHONDONTWRITEBYTECODE=1 would compile our modules from source in every fresh
    # interpreter, while posthog's come precompiled from site-packages. Each timing below
    # warms this cache with one unmeasured run first.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(home) / "pycache")
    return env


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_calls(fn: Callable[[int], object], n: int) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def row(label: str, ours: float, raw: float, unit: str) -> None:
    ratio = ours / raw if raw else float("nan")
    print(f"  {label:<44} {ours:>10.1f} {raw:>10.1f} {unit:<4} {ratio:>7.2f}x")


def header(title: str) -> None:
    print(f"\n{title}")
    print(f"  {'':<44} {'ours':>10} {'posthog':>10} {'':<4} {'ratio':>8}")


def bench_capture(receiver: PostHogReceiver, home: str) -> None:
    import posthog

    from codeweaver_telemetry import TelemetryClient, TelemetrySettings

    n = 5000
    ours = TelemetryClient(
        TelemetrySettings(
            enabled=True,
            posthog_api_key="phc_bench",
            posthog_host=receiver.url,
            state_dir=Path(home) / "t",
            batch_size=100,
            max_queue_size=20000,
        )
    )
    assert ours.enabled, ours.decision
    ours.start_session({"version": "0.5.0"})
    raw = posthog.Client("phc_bench", host=receiver.url, disable_geoip=True, max_queue_size=20000)
    for _ in range(200):  # warm up both
        ours.capture("warm", PROPS)
        raw.capture("warm", distinct_id="bench", properties=PROPS)
    ours_s = time_calls(lambda i: ours.capture("codeweaver_search", PROPS), n)
    raw_s = time_calls(
        lambda i: raw.capture("codeweaver_search", distinct_id="bench", properties=PROPS), n
    )
    header(f"capture() cost on the caller's thread, {n} calls, healthy loopback host")
    row("median", statistics.median(ours_s), statistics.median(raw_s), "us")
    row("p99", percentile(ours_s, 0.99), percentile(raw_s, 0.99), "us")
    ours.shutdown(timeout=10)
    raw.shutdown()

    off = TelemetryClient(TelemetrySettings(state_dir=Path(home) / "off"))
    assert not off.enabled
    raw_off = posthog.Client("phc_bench", host=receiver.url, disabled=True)
    off_s = time_calls(lambda i: off.capture("codeweaver_search", PROPS), n)
    raw_off_s = time_calls(
        lambda i: raw_off.capture("codeweaver_search", distinct_id="b", properties=PROPS), n
    )
    header("capture() cost when telemetry is off (posthog: disabled=True)")
    row("median", statistics.median(off_s), statistics.median(raw_off_s), "us")
    row("p99", percentile(off_s, 0.99), percentile(raw_off_s, 0.99), "us")
    raw_off.shutdown()


def import_time_ms(module: str, home: str) -> tuple[float, float]:
    """Median wall time of `import module` in a fresh interpreter, and its -X importtime total."""
    walls, totals = [], []
    subprocess.run([sys.executable, "-c", f"import {module}"], env=clean_env(home), check=True)
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            env=clean_env(home),
            capture_output=True,
            text=True,
            check=True,
        )
        for line in out.stderr.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == module:
                totals.append(int(parts[1]) / 1000)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], env=clean_env(home), check=True)
        walls.append((time.perf_counter() - start) * 1000)
    return statistics.median(totals), statistics.median(walls)


def start_ms(runs: dict[str, tuple[str, dict[str, str]]], rounds: int = 7) -> dict[str, float]:
    """Median wall time of a fresh interpreter running each ``(code, env)`` of ``runs``.

    The runs take turns, round by round, so a change in the machine's load during the
    bench weighs on every row alike; one unmeasured round first warms the bytecode cache.
    """
    walls: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(rounds + 1):
        for name, (code, env) in runs.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            if round_index:
                walls[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in walls.items()}


def bench_import(home: str) -> None:
    ours_total, ours_wall = import_time_ms("codeweaver_telemetry", home)
    raw_total, raw_wall = import_time_ms("posthog", home)
    header("import time (python -X importtime, cumulative; median of 5 fresh interpreters)")
    row("import (importtime cumulative)", ours_total, raw_total, "ms")
    row("whole interpreter run (python -c import)", ours_wall, raw_wall, "ms")
    first_client = "import codeweaver_telemetry as t; t.get_telemetry_client()"
    variants = {
        "off (DO_NOT_TRACK=1)": {"DO_NOT_TRACK": "1"},
        "on, local log": {"CODEWEAVER__TELEMETRY__ENABLED": "1"},
        "on, PostHog key": {
            "CODEWEAVER__TELEMETRY__ENABLED": "1",
            "CODEWEAVER__TELEMETRY__POSTHOG_API_KEY": "phc_x",
            "CODEWEAVER__TELEMETRY__POSTHOG_HOST": "http://127.0.0.1:9",
        },
    }
    runs = {
        "posthog": (
            "import posthog; posthog.Client('phc_x', host='http://127.0.0.1:9')",
            clean_env(home),
        ),
        **{label: (first_client, clean_env(home, **extra)) for label, extra in variants.items()},
    }
    medians = start_ms(runs)
    header("import + first client (median of 7 fresh interpreters, taking turns)")
    for label in variants:
        row(f"import + first client, {label}", medians[label], medians["posthog"], "ms")
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, codeweaver_telemetry as t; c = t.get_telemetry_client();"
            "c.capture('x'); c.get_feature_flag('f'); c.shutdown();"
            "print('posthog' in sys.modules)",
        ],
        env=clean_env(home, CODEWEAVER__TELEMETRY__POSTHOG_API_KEY="phc_x"),
        capture_output=True,
        text=True,
        check=True,
    )
    print(f"  posthog imported by a disabled client: {probe.stdout.strip()}")


OURS_EXIT = """
import time
from codeweaver_telemetry import get_telemetry_client
c = get_telemetry_client()
assert c.enabled, c.decision
for i in range(1000):
    c.capture("pending", {"i": i})
print(time.time(), flush=True)
"""

RAW_EXIT = """
import time, posthog, sys
c = posthog.Client("phc_bench", host=sys.argv[1], disable_geoip=True)
for i in range(1000):
    c.capture("pending", distinct_id="bench", properties={"i": i})
print(time.time(), flush=True)
if sys.argv[2] == "shutdown":
    c.shutdown()
"""


def exit_seconds(code: str, args: list[str], env: dict[str, str], cap_s: float) -> float:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    done = float(proc.stdout.readline())
    try:
        proc.wait(timeout=cap_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return float("inf")
    return time.time() - done


def bench_exit(receiver: PostHogReceiver, home: str) -> None:
    receiver.hang()
    env = clean_env(
        home,
        CODEWEAVER__TELEMETRY__ENABLED="1",
        CODEWEAVER__TELEMETRY__POSTHOG_API_KEY="phc_bench",
        CODEWEAVER__TELEMETRY__POSTHOG_HOST=receiver.url,
    )
    cap = 30.0
    ours = exit_seconds(OURS_EXIT, [], env, cap)
    raw_atexit = exit_seconds(RAW_EXIT, [receiver.url, "atexit"], env, cap)
    raw_shutdown = exit_seconds(RAW_EXIT, [receiver.url, "shutdown"], env, cap)
    header(f"exit time, 1,000 events pending, host accepts and never answers (cap {cap:.0f} s)")
    row("ours (default bound 0.5 s) vs posthog at exit", ours * 1000, raw_atexit * 1000, "ms")
    row("ours vs posthog with explicit shutdown()", ours * 1000, raw_shutdown * 1000, "ms")
    if raw_shutdown == float("inf"):
        print(f"  (posthog shutdown() was still running after {cap:.0f} s and was killed)")
    receiver.heal()


def bench_flags(receiver: PostHogReceiver, home: str) -> None:
    import posthog

    from codeweaver_telemetry import TelemetryClient, TelemetrySettings

    receiver.set_flags({"exp": "variant_b"})
    # Both clients send /flags/ through posthog's one module-level session: whichever asked
    # first would also pay the TCP connect (and the receiver's new connection thread), and
    # the other would reuse that connection. Open it first, so both first lookups are alike.
    warm = posthog.Client("phc_bench", host=receiver.url, disable_geoip=True)
    warm.get_feature_flag("warm", "warm-up", send_feature_flag_events=False)
    warm.shutdown()
    rounds = 7
    header(f"feature flag lookup (first lookups: median of {rounds} pairs of fresh clients)")
    cases = (
        # (label, host state, exposure events on both sides, rounds)
        ("healthy: first lookup", "healthy", True, rounds),
        ("healthy: first lookup, no exposure events", "healthy", False, rounds),
        ("hanging: first lookup", "hanging", True, 1),
    )
    for label, state, events, count in cases:
        if state == "hanging":
            receiver.hang(route="flags")
        firsts: dict[str, list[float]] = {"ours": [], "raw": []}
        for index in range(count):
            ours = TelemetryClient(
                TelemetrySettings(
                    enabled=True,
                    posthog_api_key="phc_bench",
                    posthog_host=receiver.url,
                    state_dir=Path(home) / f"flags-{state}-{events}-{index}",
                    send_feature_flag_events=events,
                )
            )
            raw = posthog.Client("phc_bench", host=receiver.url, disable_geoip=True)

            def ours_lookup(i: int, c: TelemetryClient = ours) -> object:
                return c.get_feature_flag("exp")

            def raw_lookup(i: int, c: posthog.Client = raw, e: bool = events) -> object:
                return c.get_feature_flag("exp", "bench", send_feature_flag_events=e)

            order = [("ours", ours_lookup), ("raw", raw_lookup)]
            if index % 2:  # alternate who goes first
                order.reverse()
            for name, lookup in order:
                firsts[name].append(time_calls(lookup, 1)[0])
            if index == count - 1 and events:
                cached_ours = statistics.median(time_calls(ours_lookup, 200))
                cached_raw = statistics.median(
                    time_calls(raw_lookup, 3 if state == "hanging" else 200)
                )
            ours.shutdown(timeout=0.2)
            raw.shutdown()
        first_ours, first_raw = (statistics.median(firsts[n]) for n in ("ours", "raw"))
        row(label, first_ours / 1000, first_raw / 1000, "ms")
        if events:
            row(f"{state}: later lookups (median)", cached_ours / 1000, cached_raw / 1000, "ms")
    receiver.heal()


def main() -> None:
    with tempfile.TemporaryDirectory() as home, make_receiver() as receiver:
        for var in ("CI", "DO_NOT_TRACK"):
            os.environ.pop(var, None)
        os.environ["CODEWEAVER_HOME"] = home
        print(f"python {sys.version.split()[0]}, posthog {__import__('posthog').VERSION}")
        bench_capture(receiver, home)
        bench_import(home)
        bench_flags(receiver, home)
        bench_exit(receiver, home)


if __name__ == "__main__":
    main()
