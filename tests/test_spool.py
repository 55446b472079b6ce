"""The disk spool: what a run could not deliver is kept (scrubbed) and sent by the next run."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from codeweaver_telemetry import Event, TelemetryClient
from codeweaver_telemetry._spool import SPOOL_DIR, Spool
from codeweaver_telemetry.cli import main as cli_main
from tests.helpers import SLACK_S, wait_until
from tests.receiver import CAPTURE, PostHogReceiver

SECRET_PATH = "/home/alice/private-project/notes.txt"


def spool_text(state_dir: Path) -> str:
    """Everything in the spool now; a file the drain claims or deletes meanwhile is skipped."""
    directory = state_dir / SPOOL_DIR
    if not directory.exists():
        return ""
    parts = []
    for path in sorted(directory.iterdir()):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        parts.append(data.decode("utf-8"))
    return "".join(parts)


def wire(make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver, **kw: object):
    return make_client(
        posthog_api_key="phc_spool",
        posthog_host=receiver.url,
        request_timeout_seconds=2.0,
        **kw,
    )


def test_undelivered_events_are_spooled_scrubbed_and_sent_by_the_next_run(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A hanging host at exit: events go to the spool (after the privacy pipeline), and the
    next run delivers them exactly once."""
    receiver.hang(route=CAPTURE)
    first = wire(make_client, receiver, exit_timeout_seconds=0.8)
    for i in range(5):
        first.capture("offline", {"i": i, "file": SECRET_PATH})
    started = time.monotonic()
    first.shutdown()
    assert time.monotonic() - started < 0.8 + SLACK_S, "spooling stays within the exit bound"
    assert first.stats()["spooled"] == 5
    text = spool_text(first.settings.resolved_state_dir)
    assert SECRET_PATH not in text
    assert "alice" not in text
    assert "<path>" in text
    receiver.heal()
    receiver.clear()
    second = wire(make_client, receiver)
    second.capture("online", {})
    assert second.flush(5)
    events = receiver.wait_for_events(6)
    assert sorted(e["properties"]["i"] for e in events if e["event"] == "offline") == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert [e["event"] for e in events].count("online") == 1
    # A spool file is deleted once the host has accepted its last event.
    assert wait_until(lambda: spool_text(second.settings.resolved_state_dir) == ""), (
        "the spool was emptied"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_spool_files_are_private(tmp_path: Path) -> None:
    """Spool files are mode 0600 and leave no temp files behind."""
    spool = Spool(tmp_path / "spool")
    spool.save([Event("e", {"a": 1}, 0.0, "u1", "d")])
    files = list((tmp_path / "spool").iterdir())
    assert len(files) == 1
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600


def test_a_full_spool_drops_its_oldest_events_and_counts_them(tmp_path: Path) -> None:
    """Past max_bytes the oldest segments make room for the new ones (``store()`` counts
    them as ``evicted``); a save larger than the whole bound keeps nothing."""
    spool = Spool(tmp_path / "spool", max_bytes=4000)

    def event(i: int) -> Event:  # random padding: about 800 bytes even compressed
        return Event(
            "e", {"i": i, "pad": base64.b64encode(os.urandom(750)).decode()}, float(i), f"u{i}", "d"
        )

    evicted = 0
    for i in range(10):
        stored = spool.store([event(i)])
        assert stored.kept == 1
        evicted += stored.evicted
    on_disk = sum(p.stat().st_size for p in (tmp_path / "spool").iterdir())
    assert on_disk <= 4000
    kept = [e.properties["i"] for e in spool.load()]
    assert kept == list(range(10 - len(kept), 10)), "the newest are kept, in order"
    assert evicted == 10 - len(kept) > 0
    assert spool.save([event(i) for i in range(20)]) == 0  # one segment past the bound


def test_each_spooled_event_is_loaded_once(tmp_path: Path) -> None:
    """Loading claims the files: a second loader (another process) gets nothing."""
    spool = Spool(tmp_path / "spool")
    spool.save([Event("e", {}, 1.5, "u1", "d"), Event("f", {}, 2.5, "u2", "d")])
    first = Spool(tmp_path / "spool").load()
    assert [(e.name, e.uuid, e.timestamp) for e in first] == [("e", "u1", 1.5), ("f", "u2", 2.5)]
    assert Spool(tmp_path / "spool").load() == []


def test_broken_spool_lines_are_skipped(tmp_path: Path) -> None:
    """A damaged spool file costs its damaged lines, never the run."""
    directory = tmp_path / "spool"
    directory.mkdir()
    good = json.dumps(
        {"event": "ok", "distinct_id": "d", "timestamp": 1, "uuid": "u", "properties": {}}
    )
    (directory / "spool-local-1-aa.jsonl").write_text(f"not json\n{good}\n[1]\n", encoding="utf-8")
    assert [e.name for e in Spool(directory).load()] == ["ok"]


def test_a_disabled_client_leaves_the_spool_alone(
    make_client: Callable[..., TelemetryClient],
    receiver: PostHogReceiver,
    monkeypatch: pytest.MonkeyPatch,
    clean_env: Path,
) -> None:
    """With telemetry off, spooled events are neither sent nor touched."""
    state_dir = clean_env / "telemetry"
    state_dir.mkdir(parents=True)
    assert Spool(state_dir / SPOOL_DIR).save([Event("old", {}, 0.0, "u", "d")]) == 1
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    client = TelemetryClient.from_options(
        enabled=True, posthog_api_key="phc_x", posthog_host=receiver.url
    )
    client.capture("new", {})
    client.shutdown()
    assert receiver.requests() == []
    assert '"old"' in spool_text(state_dir)


@pytest.mark.parametrize("command", ["disable", "delete"])
def test_cli_disable_and_delete_remove_the_spool(clean_env: Path, command: str) -> None:
    """Opting out, or deleting local data, also removes events not yet sent."""
    state_dir = clean_env / "telemetry"
    state_dir.mkdir(parents=True)
    assert Spool(state_dir / SPOOL_DIR).save([Event("old", {}, 0.0, "u", "d")]) == 1
    assert '"old"' in spool_text(state_dir)
    out = io.StringIO()
    assert cli_main([command], out=out) == 0
    assert spool_text(state_dir) == ""


def test_a_run_takes_at_most_its_limit_and_leaves_the_rest(tmp_path: Path) -> None:
    """A run loads up to its limit; the rest stays spooled for later runs, nothing is lost."""
    spool = Spool(tmp_path / "spool")
    spool.save([Event("e", {"i": i}, float(i), f"u{i}", "d") for i in range(10)])
    first = spool.load(limit=3)
    rest = spool.load()
    assert [e.properties["i"] for e in first] == [0, 1, 2]
    assert sorted(e.properties["i"] for e in rest) == list(range(3, 10))


def test_spooled_events_only_go_to_their_own_destination(tmp_path: Path) -> None:
    """Events spooled for one PostHog project are never loaded by a client of another."""
    Spool(tmp_path / "spool", tag="aaaa").save([Event("mine", {}, 0.0, "u", "d")])
    assert Spool(tmp_path / "spool", tag="bbbb").load() == []
    assert [e.name for e in Spool(tmp_path / "spool", tag="aaaa").load()] == ["mine"]


def test_the_spool_never_recreates_a_deleted_state_directory(tmp_path: Path) -> None:
    """After the state directory is deleted, a still-running process spools nothing."""
    spool = Spool(tmp_path / "gone" / "spool")
    assert spool.save([Event("e", {}, 0.0, "u", "d")]) == 0
    assert not (tmp_path / "gone").exists()


def test_both_halves_of_a_split_batch_are_spooled_at_exit(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A 413 split whose first half hangs at exit: the half not yet sent is spooled too."""
    from tests.receiver import Fault

    receiver.fail_next(1, Fault.status(413), route=CAPTURE)
    client = wire(make_client, receiver, exit_timeout_seconds=0.8)
    for i in range(4):
        client.capture("split", {"i": i})
    receiver.wait_for_requests(1, route=CAPTURE)
    receiver.hang(route=CAPTURE)
    client.shutdown()
    assert client.stats()["spooled"] == 4


# -- hardening: consent, draining, links ------------------------------------------------------
def _state_dir(client: TelemetryClient) -> Path:
    return client.settings.resolved_state_dir


def test_a_disable_in_another_shell_stops_events_in_flight(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A run captures against a hanging host; `codeweaver-telemetry disable` runs in another
    shell; the run ends. Nothing it captured is spooled, and after a later `enable` the
    next run sends none of it (and never the forgotten id)."""
    receiver.hang(route=CAPTURE)
    first = wire(make_client, receiver, exit_timeout_seconds=0.6)
    old_id = first.distinct_id
    for i in range(20):
        first.capture("before_disable", {"i": i})
    first.flush(0.2)  # the batch is now in the hanging host's hands
    assert cli_main(["disable"], out=io.StringIO()) == 0
    first.capture("after_disable", {})
    first.shutdown()
    assert spool_text(_state_dir(first)) == "", "nothing captured before the disable is spooled"
    assert first.stats()["dropped"].get("consent_off", 0) >= 20
    assert not first.enabled

    receiver.heal()
    receiver.clear()
    assert cli_main(["enable"], out=io.StringIO()) == 0
    second = wire(make_client, receiver)
    assert second.distinct_id != old_id
    second.capture("new_run", {})
    assert second.flush(5)
    events = receiver.wait_for_events(1)
    time.sleep(0.3)  # anything spooled would be drained by now
    assert {e["event"] for e in receiver.events()} == {"new_run"}
    assert all(e["distinct_id"] == second.distinct_id for e in receiver.events())
    assert old_id not in json.dumps(events)


def test_events_queued_before_a_disable_are_never_sent(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """Events still waiting in the queue when the user disables are dropped, not sent; the
    client turns itself off."""
    client = wire(make_client, receiver, batch_interval_seconds=60.0)
    for i in range(5):
        client.capture("queued", {"i": i})
    assert cli_main(["disable"], out=io.StringIO()) == 0
    client.flush(2)
    client.capture("later", {})
    client.shutdown()
    assert receiver.events() == []
    assert not client.enabled
    assert client.decision.source == "stored_choice"


def test_a_delete_in_another_shell_stops_sending(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """`codeweaver-telemetry delete` while a run is going: the id is gone, so is the sending."""
    client = wire(make_client, receiver, batch_interval_seconds=60.0)
    client.capture("queued", {})
    assert cli_main(["delete"], out=io.StringIO()) == 0
    client.flush(2)
    client.shutdown()
    assert receiver.events() == []
    assert not _state_dir(client).exists(), "nothing was written back after the delete"


def test_spooled_events_of_a_forgotten_install_id_are_dropped(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver, clean_env: Path
) -> None:
    """A spool file made for another install id (one that `disable` forgot) is never sent."""
    client = wire(make_client, receiver)
    state_dir = _state_dir(client)
    client.shutdown()
    spool = Spool(state_dir / SPOOL_DIR, tag=_tag_of(state_dir))
    stale = [Event("stale", {}, time.time(), "u1", "00000000-0000-4000-8000-000000000000")]
    assert spool.save(stale) == 1
    receiver.clear()
    second = wire(make_client, receiver)
    second.capture("fresh", {})
    assert second.flush(5)
    assert wait_until(lambda: not spool.has_files())
    assert [e["event"] for e in receiver.events()] == ["fresh"]


def _tag_of(state_dir: Path) -> str:
    names = (
        [p.name for p in (state_dir / SPOOL_DIR).glob("spool-*")]
        if (state_dir / SPOOL_DIR).exists()
        else []
    )
    if names:
        return names[0].split("-")[1]
    from codeweaver_telemetry.client import _spool_tag
    from codeweaver_telemetry.settings import TelemetrySettings

    return _spool_tag(TelemetrySettings(posthog_api_key="phc_spool", posthog_host=_HOST[0]), None)


_HOST: list[str] = [""]


@pytest.fixture(autouse=True)
def _remember_host(receiver: PostHogReceiver) -> None:
    _HOST[0] = receiver.url


def test_a_run_drains_the_whole_spool_in_the_background(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """4,000 spooled events (from runs that could not send) all go out in one later run,
    from its start, though that run captures nothing."""
    first = wire(make_client, receiver)
    first.shutdown()
    install_id = first.distinct_id
    assert install_id is not None
    spool = Spool(_state_dir(first) / SPOOL_DIR, tag=_tag_of(_state_dir(first)))
    for chunk in range(8):
        batch = [
            Event("spooled", {"i": chunk * 500 + i}, time.time(), str(uuid.uuid4()), install_id)
            for i in range(500)
        ]
        assert spool.save(batch) == 500
    receiver.clear()
    second = wire(make_client, receiver)
    events = receiver.wait_for_events(4000, timeout=60)
    assert sorted(e["properties"]["i"] for e in events) == list(range(4000))
    assert wait_until(lambda: not spool.has_files(), timeout=10)
    assert second.stats()["sent"] == 4000


def test_exit_while_draining_keeps_the_rest_spooled(
    make_client: Callable[..., TelemetryClient], receiver: PostHogReceiver
) -> None:
    """A run that exits while the host hangs mid-drain waits no longer than its bound, and
    every spooled event is still there for the next run."""
    first = wire(make_client, receiver)
    first.shutdown()
    install_id = first.distinct_id
    assert install_id is not None
    spool = Spool(_state_dir(first) / SPOOL_DIR, tag=_tag_of(_state_dir(first)))
    batch = [
        Event("spooled", {"i": i}, time.time(), str(uuid.uuid4()), install_id) for i in range(300)
    ]
    assert spool.save(batch) == 300
    receiver.hang(route=CAPTURE)
    second = wire(make_client, receiver, exit_timeout_seconds=0.5)
    receiver.wait_for_requests(1, route=CAPTURE)
    started = time.monotonic()
    second.shutdown()
    assert time.monotonic() - started < 0.5 + SLACK_S
    kept = Spool(_state_dir(first) / SPOOL_DIR, tag=_tag_of(_state_dir(first))).load()
    assert sorted(e.properties["i"] for e in kept) == list(range(300))


def test_a_claim_left_by_a_dead_process_is_taken_back(tmp_path: Path) -> None:
    """A spool file claimed by a process that died mid-drain is drained by the next run."""
    spool = Spool(tmp_path / "spool")
    spool.save([Event("e", {"i": 1}, 0.0, "u1", "d")])
    (name,) = [p.name for p in (tmp_path / "spool").iterdir()]
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    os.replace(tmp_path / "spool" / name, tmp_path / "spool" / f".claimed-{pid}-0a1b2c3d-{name}")
    assert [e.name for e in Spool(tmp_path / "spool").load()] == ["e"]


def test_a_claim_of_an_earlier_process_with_this_pid_is_taken_back(tmp_path: Path) -> None:
    """A container's next run often has the same pid as the one killed mid-drain: its
    claim (another token) still goes back into the spool."""
    spool = Spool(tmp_path / "spool")
    spool.save([Event("e", {"i": 1}, 0.0, "u1", "d")])
    (name,) = [p.name for p in (tmp_path / "spool").iterdir()]
    stale = f".claimed-{os.getpid()}-deadbeef-{name}"
    os.replace(tmp_path / "spool" / name, tmp_path / "spool" / stale)
    assert [e.name for e in Spool(tmp_path / "spool").load()] == ["e"]
    assert list((tmp_path / "spool").iterdir()) == []


def test_handing_back_a_large_claim_never_loses_it_to_its_own_size(tmp_path: Path) -> None:
    """A claimed file of more than half the bound goes back whole at exit (its own size is
    not counted twice)."""
    spool = Spool(tmp_path / "spool", max_bytes=100_000)
    events = [Event("e", {"pad": "x" * 500, "i": i}, 0.0, f"u{i}", "d") for i in range(120)]
    assert spool.save(events) == 120
    claim = spool.claim()
    assert claim is not None
    assert claim.give_back(claim.events) == 120
    assert sorted(e.properties["i"] for e in spool.load()) == list(range(120))


class CountingSpool(Spool):
    """A real spool that counts how often a worker tries to claim from it."""

    claims = 0

    def claim(self, keep=None):  # type: ignore[no-untyped-def]
        self.claims += 1
        return super().claim(keep)


def test_a_spool_that_cannot_be_claimed_is_not_retried_in_a_loop(tmp_path: Path) -> None:
    """When a spool file cannot be renamed (here a directory stands at the claim's name:
    EISDIR, as EROFS or EACCES would on a read-only mount), claim() answers None and the
    worker stops draining instead of spinning."""
    from codeweaver_telemetry._spool import _claimer
    from codeweaver_telemetry._worker import Worker
    from codeweaver_telemetry.sinks.memory import InMemorySink

    spool = CountingSpool(tmp_path / "spool")
    spool.save([Event("e", {}, 0.0, "u", "d")])
    (name,) = [p.name for p in (tmp_path / "spool").iterdir()]
    (tmp_path / "spool" / f".claimed-{_claimer()}-{name}").mkdir()
    assert spool.claim() is None
    worker = Worker(
        sink=InMemorySink(),
        process=lambda e, d: e,
        batch_size=10,
        interval_s=60,
        max_queue=100,
        spool=spool,
    )
    worker.start_draining()
    time.sleep(0.5)
    worker.shutdown(0.5)
    assert spool.claims <= 3, f"{spool.claims} claims in 0.5 s: the worker spun"


def test_spooled_payloads_cannot_carry_person_data_or_reserved_events(tmp_path: Path) -> None:
    """A spool file edited by hand cannot smuggle `$identify` or `$set` past the pipeline."""
    directory = tmp_path / "spool"
    directory.mkdir()
    lines = [
        {"event": "$identify", "properties": {"$set": {"email": "a@b.c"}}},
        {
            "event": "ok",
            "properties": {
                "$set": {"email": "a@b.c"},
                "$lib": "x",
                "n": 1,
                "$feature/exp": "a",
                "$process_person_profile": True,
            },
        },
        {"event": "$feature_flag_called", "properties": {"$feature_flag": "exp"}},
    ]
    text = "".join(
        json.dumps({"distinct_id": "d", "timestamp": 1, "uuid": f"u{i}", **line}) + "\n"
        for i, line in enumerate(lines)
    )
    (directory / "spool-local-1-aa.jsonl").write_text(text, encoding="utf-8")
    loaded = Spool(directory).load()
    assert [e.name for e in loaded] == ["ok", "$feature_flag_called"]
    assert loaded[0].properties == {
        "$lib": "x",
        "n": 1,
        "$feature/exp": "a",
        "$process_person_profile": False,
        "$geoip_disable": True,
    }


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_a_symlinked_spool_directory_is_refused(tmp_path: Path) -> None:
    """A spool directory planted as a link elsewhere: nothing is written or read through it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(outside, state / SPOOL_DIR)
    spool = Spool(state / SPOOL_DIR)
    with pytest.raises(OSError, match="symbolic link"):
        spool.save([Event("e", {}, 0.0, "u", "d")])
    assert list(outside.iterdir()) == []
    (outside / "spool-local-1-aa.jsonl").write_text(
        json.dumps(
            {"event": "x", "distinct_id": "d", "timestamp": 1, "uuid": "u", "properties": {}}
        )
        + "\n",
        encoding="utf-8",
    )
    assert spool.load() == []
    assert spool.claim() is None


def test_a_spool_that_cannot_be_written_says_what_was_lost_and_why(
    make_client: Callable[..., TelemetryClient],
    receiver: PostHogReceiver,
    telemetry_logs: pytest.LogCaptureFixture,
) -> None:
    """When the spool cannot be written at exit, the warning gives the count and the reason."""
    receiver.hang(route=CAPTURE)
    client = wire(make_client, receiver, exit_timeout_seconds=0.4)
    state_dir = _state_dir(client)
    (state_dir / SPOOL_DIR).write_text("a file where the spool directory should be")
    for i in range(3):
        client.capture("lost", {"i": i})
    client.shutdown()
    lost = [r.getMessage() for r in telemetry_logs.records if "were lost" in r.getMessage()]
    assert lost, [r.getMessage() for r in telemetry_logs.records]
    assert "3 undelivered events" in lost[0]
    assert "not a directory" in lost[0].lower() or "ENOTDIR" in lost[0] or "EEXIST" in lost[0]
    assert client.stats()["dropped"].get("spool_error") == 3
