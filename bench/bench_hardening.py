"""Hardening figures under faults, beside the raw posthog client where it has an answer.

Printed, never asserted. Run with ./scripts/bench (or python bench/bench_hardening.py).

- events sent after a `disable` run in another shell (old install id), over a hanging host;
- child events delivered when a child forks at 20 points of the parent's start-up;
- runs needed to drain 4,000 spooled events (each run lives 1 s and captures nothing);
- WARNING lines logged for 1,000,000 captures with the host down (posthog: per 100,000).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.receiver import CAPTURE, PostHogReceiver, make_receiver, refusing_url  # noqa: E402


def env_for(home: Path, url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CODEWEAVER") and k not in ("CI", "DO_NOT_TRACK")
    }
    env.update(
        {
            "CODEWEAVER_HOME": str(home),
            "CODEWEAVER__TELEMETRY__ENABLED": "1",
            "CODEWEAVER__TELEMETRY__POSTHOG_API_KEY": "phc_bench",
            "CODEWEAVER__TELEMETRY__POSTHOG_HOST": url,
            "PYTHONPATH": str(ROOT),
            "PYTHONWARNINGS": "ignore::DeprecationWarning",
        },
        **extra,
    )
    return env


def run(code: str, env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout


CAPTURING_RUN = textwrap.dedent(
    """
    import subprocess, sys
    from codeweaver_telemetry import get_telemetry_client
    client = get_telemetry_client()
    print(client.distinct_id, flush=True)
    for i in range(200):
        client.capture("before_disable", {"i": i})
    client.flush(0.3)
    subprocess.run([sys.executable, "-m", "codeweaver_telemetry.cli", "disable"],
                   check=True, capture_output=True)
    for i in range(200):
        client.capture("after_disable", {"i": i})
    """
)

NEXT_RUN = textwrap.dedent(
    """
    import time
    from codeweaver_telemetry import get_telemetry_client
    client = get_telemetry_client()
    client.capture("next_run", {})
    time.sleep(2)
    client.flush(5)
    """
)


def bench_disable(receiver: PostHogReceiver, home: Path) -> None:
    receiver.hang(route=CAPTURE)
    env = env_for(home, receiver.url, CODEWEAVER__TELEMETRY__EXIT_TIMEOUT_SECONDS="1")
    old_id = run(CAPTURING_RUN, env).strip()
    receiver.heal()
    receiver.clear()
    subprocess.run(
        [sys.executable, "-m", "codeweaver_telemetry.cli", "enable"],
        env=env,
        check=True,
        capture_output=True,
    )
    run(NEXT_RUN, env)
    events = receiver.events()
    old = [e for e in events if e["distinct_id"] == old_id]
    print("\nconsent: a run captures 400 events over a hanging host; `disable` in another shell")
    print(f"  events later sent under the forgotten id:        {len(old)} of 400")
    print(f"  events of the next run (after `enable`, new id): {len(events) - len(old)}")


FORK_AT = textwrap.dedent(
    """
    import os, sys, time
    from codeweaver_telemetry import get_telemetry_client
    delay = float(sys.argv[1])
    client = get_telemetry_client()
    client.capture("parent", {})
    time.sleep(delay)
    pid = os.fork()
    if pid == 0:
        for i in range(50):
            client.capture("child", {"delay": delay, "i": i})
        os._exit(0 if client.flush(3) else 3)
    os.waitpid(pid, 0)
    """
)


def bench_fork(receiver: PostHogReceiver, home: Path) -> None:
    points = [i * 0.015 for i in range(20)]  # 0 to 285 ms: the worker's start-up and after
    started = time.perf_counter()
    for index, delay in enumerate(points):
        run(FORK_AT, env_for(home / f"f{index}", receiver.url), str(delay))
    deadline = time.monotonic() + 10
    while len(receiver.events_named("child")) < 20 * 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    got = len(
        {(e["properties"]["delay"], e["properties"]["i"]) for e in receiver.events_named("child")}
    )
    print("\nfork: a child forks at 20 points (0-285 ms) of the parent's start-up, 50 events each")
    print(f"  child events delivered: {got} of {20 * 50}  ({time.perf_counter() - started:.1f} s)")


SHORT_RUN = textwrap.dedent(
    """
    import time
    from codeweaver_telemetry import get_telemetry_client
    client = get_telemetry_client()
    assert client.enabled, client.decision
    time.sleep(1.0)  # the app's own work; it captures nothing
    """
)


def bench_drain(receiver: PostHogReceiver, home: Path) -> None:
    from codeweaver_telemetry._spool import SPOOL_DIR, Spool
    from codeweaver_telemetry._types import Event
    from codeweaver_telemetry.client import _spool_tag
    from codeweaver_telemetry.settings import TelemetrySettings
    from codeweaver_telemetry.state import StateStore

    state_dir = home / "telemetry"
    install_id, _ = StateStore(state_dir).ensure_identity()
    tag = _spool_tag(
        TelemetrySettings(posthog_api_key="phc_bench", posthog_host=receiver.url), None
    )
    spool = Spool(state_dir / SPOOL_DIR, tag=tag)
    for chunk in range(8):
        events = [
            Event(
                "spooled",
                {"i": chunk * 500 + i, "pad": "x" * 100},
                time.time(),
                str(uuid.uuid4()),
                install_id,
            )
            for i in range(500)
        ]
        spool.save(events)
    runs = 0
    started = time.perf_counter()
    while len(receiver.events_named("spooled")) < 4000 and runs < 20:
        runs += 1
        run(SHORT_RUN, env_for(home, receiver.url))
    got = len({e["uuid"] for e in receiver.events_named("spooled")})
    print(
        "\nspool: 4,000 events spooled by earlier runs; each later run lives 1 s, captures nothing"
    )
    print(
        f"  runs needed to drain them: {runs}  ({got} distinct delivered, "
        f"{time.perf_counter() - started:.1f} s)"
    )


def bench_warnings() -> None:
    import posthog

    from codeweaver_telemetry import TelemetryClient, TelemetrySettings

    class Count(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.n = 0

        def emit(self, record: logging.LogRecord) -> None:
            self.n += 1

    ours_log, raw_log = Count(), Count()
    logging.getLogger("codeweaver_telemetry").addHandler(ours_log)
    logging.getLogger("posthog").addHandler(raw_log)
    with refusing_url() as url, tempfile.TemporaryDirectory() as home:
        client = TelemetryClient(
            TelemetrySettings(
                enabled=True,
                posthog_api_key="phc_bench",
                posthog_host=url,
                state_dir=Path(home),
                exit_timeout_seconds=0.5,
            )
        )
        n = 1_000_000
        started = time.perf_counter()
        for i in range(n):
            client.capture("flood", {"i": i})
        ours_s = time.perf_counter() - started
        client.shutdown()
        dropped = client.stats()["dropped"]
        raw = posthog.Client("phc_bench", host=url, disable_geoip=True, max_retries=0)
        m = 100_000
        started = time.perf_counter()
        for i in range(m):
            raw.capture("flood", distinct_id="bench", properties={"i": i})
        raw_s = time.perf_counter() - started
        raw.shutdown()
    print("\nvisibility: captures in a tight loop with the host down (connection refused)")
    print(
        f"  ours:    {ours_log.n} WARNING lines for {n:,} captures ({ours_s:.1f} s); "
        f"dropped {dict(dropped)}"
    )
    print(f"  posthog: {raw_log.n} WARNING lines for {m:,} captures ({raw_s:.1f} s)")
    print(f"  lines per 100,000 captures, ours/posthog: {ours_log.n * m / n:.1f} / {raw_log.n}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, make_receiver() as receiver:
        bench_disable(receiver, Path(tmp) / "disable")
        receiver.clear()
        bench_fork(receiver, Path(tmp) / "fork")
        receiver.clear()
        bench_drain(receiver, Path(tmp) / "drain")
    bench_warnings()


if __name__ == "__main__":
    main()
